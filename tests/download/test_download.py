"""fetch(spec, role) over plain HTTP against a server on 127.0.0.1 that misbehaves on purpose."""
import os

import pytest
from download_helpers import corrupt_files, http_file, isolated, make_spec, server, sha, zipped  # noqa: F401
from loopback_server import file_route, html_route

from harness.download import cache_path, fetch
from harness.errors import UserError
from harness.manifest import read_yaml

DATA = zipped(os.urandom(300_000))


def resumed_at(range_header):
    return int(range_header.removeprefix("bytes=").rstrip("-"))


def test_download_verifies_and_caches(tmp_path, server):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    path = fetch(spec, "checkpoint", quiet=True)
    assert path == tmp_path / "home" / "weights" / "q2l-test" / "checkpoint.pkl"
    assert path.read_bytes() == DATA
    assert fetch(spec, "checkpoint", quiet=True) == path  # second time: from the cache
    assert len(server.hits("/ckpt")) == 1
    assert not list(path.parent.glob("*.part-*"))
    elsewhere = fetch(spec, "checkpoint", cache_dir=tmp_path / "other", quiet=True)
    assert elsewhere == tmp_path / "other" / "weights" / "q2l-test" / "checkpoint.pkl"


def test_dropped_connection_resumes_with_range(tmp_path, server):
    server.routes["/ckpt"] = file_route(DATA, drop_first=1)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    first, second = server.hits("/ckpt")
    assert first is None and 0 < resumed_at(second) <= len(DATA) // 2


def test_server_ignoring_range_restarts_from_zero(tmp_path, server):
    server.routes["/ckpt"] = file_route(DATA, drop_first=1, ranges=False)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert resumed_at(server.hits("/ckpt")[1]) > 0  # asked to resume, got 200 and started over


def test_interrupted_download_resumes_on_next_call(tmp_path, server, monkeypatch):
    monkeypatch.setenv("HARNESS_RETRIES", "0")
    server.routes["/ckpt"] = file_route(DATA, drop_first=1)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    with pytest.raises(UserError, match="no network"):
        fetch(spec, "checkpoint", quiet=True)
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert resumed_at(server.hits("/ckpt")[1]) > 0


def test_corrupted_body_is_moved_aside_and_never_used(tmp_path, server):
    server.routes["/bad"] = file_route(DATA[:-1] + b"x")
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/bad", sha(DATA))})
    with pytest.raises(UserError) as err:
        fetch(spec, "checkpoint", quiet=True)
    folder = cache_path(spec, "checkpoint").parent
    assert not cache_path(spec, "checkpoint").exists()
    [moved] = corrupt_files(folder)
    assert moved.startswith("checkpoint.pkl.corrupt-") and moved in str(err.value)
    assert "\n" not in str(err.value)


def test_falls_back_to_the_next_source(tmp_path, server):
    server.routes["/bad"] = file_route(DATA[:-1] + b"x")
    server.routes["/good"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/bad", sha(DATA), more=[server.url + "/good"])})
    path = fetch(spec, "checkpoint", quiet=True)
    assert path.read_bytes() == DATA and len(corrupt_files(path.parent)) == 1


@pytest.mark.parametrize("route, message", [
    (html_route("<html><body>Please log in</body></html>"), "HTML page"),
    (html_route("<html>gone</html>", status=404), "HTTP 404"),
    (html_route("<html>no</html>", status=403), "HTTP 403"),
])
def test_unusable_answers_give_one_clear_line(tmp_path, server, route, message):
    server.routes["/f"] = route
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/f", sha(DATA))})
    with pytest.raises(UserError, match=message) as err:
        fetch(spec, "checkpoint", quiet=True)
    assert "--weights-dir" in str(err.value) and "\n" not in str(err.value)
    assert not cache_path(spec, "checkpoint").exists()


def test_slow_server_times_out(tmp_path, server, monkeypatch):
    monkeypatch.setenv("HARNESS_RETRIES", "1")
    monkeypatch.setenv("HARNESS_READ_TIMEOUT", "0.1")  # two attempts of 0.5 s (isolated's) were a second; 2 s is never met
    server.routes["/slow"] = file_route(DATA, delay=2.0)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/slow", sha(DATA))})
    with pytest.raises(UserError, match="timed out"):
        fetch(spec, "checkpoint", quiet=True)


def test_no_network_says_so(tmp_path, server):
    url = server.url + "/ckpt"
    server.close()  # nothing listens on that port any more: connection refused
    spec = make_spec(tmp_path, {"checkpoint": http_file(url, sha(DATA))})
    with pytest.raises(UserError, match=r"^no network: .*connection refused.*check the connection.*--weights-dir"):
        fetch(spec, "checkpoint", quiet=True)


def test_dns_failure_says_no_network(tmp_path, monkeypatch):
    import socket

    def no_dns(host, *args, **kwargs):  # what the resolver answers for an unknown name, without asking it
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    spec = make_spec(tmp_path, {"checkpoint": http_file("http://mirror.invalid/ckpt", sha(DATA))})
    with pytest.raises(UserError, match=r"^no network: .*DNS lookup failed"):
        fetch(spec, "checkpoint", quiet=True)


def test_disk_full_is_a_user_error(tmp_path, server):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    from harness.download.sources import partial_path
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    part = partial_path(cache_path(spec, "checkpoint"), spec.files["checkpoint"].sources[0])
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write there fails with ENOSPC
    with pytest.raises(UserError, match="disk full"):
        fetch(spec, "checkpoint", quiet=True)


def test_unpinned_file_is_locked_then_a_change_is_refused(tmp_path, server, capsys):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    path = fetch(spec, "checkpoint")
    assert "not pinned" in capsys.readouterr().err
    lock = read_yaml((tmp_path / "weights_manifest.lock.yaml").read_text())
    entry = lock["q2l-test"]["checkpoint"]
    assert entry["sha256"] == sha(DATA) and entry["size"] == len(DATA) and entry["source"].endswith("/ckpt")
    fetch(spec, "checkpoint")
    assert "not pinned" not in capsys.readouterr().err  # warned once only
    # The server now hands out another file: refused, moved aside, the lock names the fix.
    path.unlink()
    server.routes["/ckpt"] = file_route(zipped(os.urandom(1000)))
    with pytest.raises(UserError) as err:
        fetch(spec, "checkpoint", quiet=True)
    assert corrupt_files(path.parent)[0] in str(err.value) and not path.exists()
    # Downloading again cannot help: the fix names the lock file's entry and the cached file.
    assert (f"delete that entry and the cached file {path}" in str(err.value)
            and f"'q2l-test: checkpoint:' in {tmp_path / 'weights_manifest.lock.yaml'}" in str(err.value))


def test_cached_file_changed_is_caught(tmp_path, server):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    path = fetch(spec, "checkpoint", quiet=True)
    stamp = path.stat().st_mtime_ns
    path.write_bytes(DATA[:-1] + b"y")  # replaced in place, same size
    os.utime(path, ns=(stamp, stamp + 10**9))  # a second later, whatever the clock's grain
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA  # mtime moved: re-hashed, fetched anew
    stamp = path.stat().st_mtime_ns
    path.write_bytes(DATA[:-1] + b"z")
    os.utime(path, ns=(stamp, stamp))  # same size and mtime: the cheap check cannot see it...
    assert fetch(spec, "checkpoint", quiet=True, verify=False).read_bytes() != DATA
    assert fetch(spec, "checkpoint", quiet=True, verify=True).read_bytes() == DATA  # ...a full hash does
    path.write_bytes(DATA[:100])  # a size change is seen without --verify
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert len(corrupt_files(path.parent)) == 3 and len(server.hits("/ckpt")) == 4


def test_offline_never_touches_the_network(tmp_path, server, monkeypatch):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"offline: .*checkpoint.pkl.*looked in .*q2l-test/checkpoint.pkl"):
        fetch(spec, "checkpoint", weights_dir=tmp_path / "mine")
    assert server.log == []
    path = fetch(spec, "checkpoint", offline=False, quiet=True)
    assert fetch(spec, "checkpoint") == path and len(server.log) == 1


@pytest.mark.parametrize("where", ["q2l-test", "Q2L-Test", "."])
def test_weights_dir_files_are_used_and_verified(tmp_path, server, where):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    placed = tmp_path / "mine" / where / "checkpoint.pkl"
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(DATA)
    assert fetch(spec, "checkpoint", weights_dir=tmp_path / "mine") == placed
    placed.write_bytes(b"something else")
    with pytest.raises(UserError, match="not the released file"):
        fetch(spec, "checkpoint", weights_dir=tmp_path / "mine")
    assert server.log == []


def test_weights_dir_bare_name_needs_a_known_hash(tmp_path, server):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})  # unpinned, nothing locked
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "checkpoint.pkl").write_bytes(b"which model is this?")
    path = fetch(spec, "checkpoint", weights_dir=tmp_path / "mine", quiet=True)
    assert path.read_bytes() == DATA and len(server.log) == 1  # ignored the ambiguous file, downloaded


def test_cli_prints_path_and_sha(tmp_path, server, capsys):
    from harness.cli import main
    server.routes["/ckpt"] = file_route(DATA)
    make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    manifest = str(tmp_path / "manifest.yaml")
    assert main(["download", "q2l-test", "mlspl-test", "--manifest", manifest, "-q"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint.pkl  sha256 {sha(DATA)}" in out
    assert "mlspl-test: trained here: no released weights (see harness mlspl)" in out
    assert main(["download", "nope", "--manifest", manifest]) == 2
    assert "unknown target 'nope'" in capsys.readouterr().err
    assert main(["download", "all", "--manifest", manifest, "--offline", "--cache", str(tmp_path / "c2")]) == 2
    assert "offline" in capsys.readouterr().err
