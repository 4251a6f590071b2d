"""What may enter the cache and the lock file: one writer at a time, no body longer than declared,
no first hash locked on a file that is not what its role needs, a cheap check that sees files
replaced in place, and one clear line for a broken lock file."""
import json
import os
import re
import threading
import time

import pytest
from download_helpers import corrupt_files, http_file, isolated, make_spec, server, sha, zipped  # noqa: F401
from loopback_server import file_route, send

from harness.download import cache_path, fetch
from harness.download.lock import read_lock, record_lock
from harness.download.sources import partial_path
from harness.download.verify import read_record, write_record
from harness.errors import UserError
from harness.manifest import read_yaml

DATA = zipped(os.urandom(600_000))


def lock_yaml(tmp_path):
    path = tmp_path / "weights_manifest.lock.yaml"
    return read_yaml(path.read_text()) if path.exists() else {}


def slow_route(data, pause=0.02):
    """A file served in 64 KiB pieces with a pause between them, honouring `Range: bytes=N-`."""
    def route(h, query):
        m = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        start = int(m.group(1)) if m else 0
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        for i in range(0, len(body), 1 << 16):
            h.wfile.write(body[i:i + (1 << 16)])
            h.wfile.flush()
            time.sleep(pause)
    return route


def in_parallel(*calls):
    """Run the calls at once in threads; return each one's result or exception."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except Exception as e:  # noqa: BLE001 (handed back to the test)
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# ------------------------------------------------------------------ one writer at a time

def test_two_runs_resuming_one_partial_give_one_good_file(tmp_path, server):
    server.routes["/ckpt"] = slow_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})  # unpinned: locked at first
    dest = cache_path(spec, "checkpoint")
    dest.parent.mkdir(parents=True)
    partial_path(dest, spec.files["checkpoint"].sources[0]).write_bytes(DATA[:200_000])  # an earlier run's
    results = in_parallel(lambda: fetch(spec, "checkpoint", quiet=True), lambda: fetch(spec, "checkpoint", quiet=True))
    assert results == [dest, dest]
    assert dest.read_bytes() == DATA
    assert lock_yaml(tmp_path)["q2l-test"]["checkpoint"]["sha256"] == sha(DATA)
    assert server.hits("/ckpt") == ["bytes=200000-"]  # the second run waited, then found the verified file
    assert not list(dest.parent.glob("*.part-*")) and not corrupt_files(dest.parent)


def test_concurrent_lock_file_writes_lose_no_entry(tmp_path):
    path = tmp_path / "weights_manifest.lock.yaml"

    # each write rereads and rewrites the whole file, so the cost grows with the square of the
    # entries: six writers of six entries keep the contention at a fraction of the time
    def writer(k):
        def write():
            for i in range(6):
                record_lock(path, f"model-{k}-{i}", "checkpoint", f"{k:02d}{i:02d}".ljust(64, "a"), 1, "test")
        return write
    assert in_parallel(*(writer(k) for k in range(6))) == [None] * 6
    assert len(read_lock(path)) == 6 * 6
    assert not list(tmp_path.glob("*.tmp"))


def test_concurrent_record_writes_do_not_collide(tmp_path):
    path = tmp_path / "checkpoint.pkl"
    path.write_bytes(b"x" * 10)

    def write():
        for _ in range(200):
            write_record(path, "a" * 64, "test")
    assert in_parallel(write, write, write) == [None] * 3
    assert read_record(path)["sha256"] == "a" * 64 and not list(tmp_path.glob("*.tmp"))


def test_body_longer_than_declared_is_refused_and_moved_aside(tmp_path, server):
    def liar(h, query):  # the resumed body runs past the total its own Content-Range declares
        start = int(h.headers["Range"].removeprefix("bytes=").rstrip("-"))
        body = DATA[start:]
        send(h, body, status=206, headers={"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA) - 500}"})
    server.routes["/ckpt"] = liar
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    dest = cache_path(spec, "checkpoint")
    dest.parent.mkdir(parents=True)
    partial_path(dest, spec.files["checkpoint"].sources[0]).write_bytes(DATA[:1000])
    with pytest.raises(UserError, match=f"more than the {len(DATA) - 500} bytes it declared") as err:
        fetch(spec, "checkpoint", quiet=True)
    [moved] = corrupt_files(dest.parent)
    assert moved in str(err.value) and not dest.exists() and lock_yaml(tmp_path) == {}


def test_partial_grown_by_another_writer_is_refused(tmp_path, server):
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    dest = cache_path(spec, "checkpoint")
    part = partial_path(dest, spec.files["checkpoint"].sources[0])
    dest.parent.mkdir(parents=True)
    part.write_bytes(DATA[:1000])

    def other_writer_meanwhile(h, query):  # a run that takes no lock appends to the same partial file
        body = DATA[1000:]
        h.send_response(206)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Content-Range", f"bytes 1000-{len(DATA) - 1}/{len(DATA)}")
        h.end_headers()
        h.wfile.write(body[:100_000])
        h.wfile.flush()
        time.sleep(0.1)
        with open(part, "ab") as f:
            f.write(DATA[1000:5000])
        h.wfile.write(body[100_000:])
    server.routes["/ckpt"] = other_writer_meanwhile
    with pytest.raises(UserError, match=f"more than the {len(DATA)} that"):
        fetch(spec, "checkpoint", quiet=True)
    assert len(corrupt_files(dest.parent)) == 1 and not dest.exists() and lock_yaml(tmp_path) == {}


# ------------------------------------------------------------------ what a first hash may be locked on

def close_delimited(data):
    """HTTP/1.0 without Content-Length: the body ends where the connection closes, cut or not."""
    def route(h, query):
        h.protocol_version = "HTTP/1.0"
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        h.wfile.write(data)
        h.close_connection = True
    return route


@pytest.mark.parametrize("route, reason", [
    (close_delimited(DATA[: len(DATA) // 2]), "truncated zip"),
    (lambda h, q: send(h, b'{"error": "rate limit exceeded"}', content_type="application/json"),
     "not a torch checkpoint"),
    (lambda h, q: send(h, b"Service temporarily unavailable", content_type="text/plain"), "not a torch checkpoint"),
])
def test_checkpoint_that_is_not_a_torch_file_is_never_locked(tmp_path, server, route, reason):
    server.routes["/ckpt"] = route
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    with pytest.raises(UserError, match=reason) as err:
        fetch(spec, "checkpoint", quiet=True)
    dest = cache_path(spec, "checkpoint")
    [moved] = corrupt_files(dest.parent)
    assert moved in str(err.value) and "\n" not in str(err.value)
    assert not dest.exists() and lock_yaml(tmp_path) == {}
    server.routes["/ckpt"] = file_route(DATA)  # the server is well again: the real file is locked
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert lock_yaml(tmp_path)["q2l-test"]["checkpoint"]["sha256"] == sha(DATA)


def test_legacy_torch_pickle_is_accepted(tmp_path, server):
    legacy = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + os.urandom(1000)  # torch.save(..., zipfile=False)
    server.routes["/ckpt"] = file_route(legacy)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == legacy
    assert lock_yaml(tmp_path)["q2l-test"]["checkpoint"]["sha256"] == sha(legacy)


@pytest.mark.parametrize("body, reason", [
    (b"Service temporarily unavailable", "not JSON"),
    (b'["not", "a", "config"]', "not an object"),
    (b'{"img_size": 448', "not JSON"),  # cut off
])
def test_config_must_be_a_json_object(tmp_path, server, body, reason):
    server.routes["/cfg"] = lambda h, q: send(h, body, content_type="text/plain")
    server.routes["/good"] = file_route(b'{"img_size": 448}')
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA)),
                                "config": http_file(server.url + "/cfg", filename="config_new.json")})
    with pytest.raises(UserError, match=reason):
        fetch(spec, "config", quiet=True)
    assert lock_yaml(tmp_path) == {}
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA)),
                                "config": http_file(server.url + "/cfg", filename="config_new.json",
                                                    more=[server.url + "/good"])})
    assert json.loads(fetch(spec, "config", quiet=True).read_text()) == {"img_size": 448}  # the next source
    assert lock_yaml(tmp_path)["q2l-test"]["config"]["source"].endswith("/good")


def test_hand_placed_or_cached_junk_is_not_locked(tmp_path, server):
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    placed = tmp_path / "mine" / "q2l-test" / "checkpoint.pkl"
    placed.parent.mkdir(parents=True)
    placed.write_text("<Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(UserError, match=r"not a torch checkpoint.*remove or replace it"):
        fetch(spec, "checkpoint", weights_dir=tmp_path / "mine")
    assert lock_yaml(tmp_path) == {} and placed.exists()  # the user's own file is left where it is
    dest = cache_path(spec, "checkpoint")  # a cached file whose lock entry was deleted is looked at again
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"\x00" * 100)
    write_record(dest, sha(b"\x00" * 100), "test")
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert len(corrupt_files(dest.parent)) == 1 and lock_yaml(tmp_path)["q2l-test"]["checkpoint"]["sha256"] == sha(DATA)


# ------------------------------------------------------------------ the cache's cheap check

def test_record_keeps_mtime_and_old_records_are_rehashed_once(tmp_path, server, monkeypatch):
    import harness.download.weights as weights

    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt", sha(DATA))})
    path = fetch(spec, "checkpoint", quiet=True)
    assert read_record(path)["mtime_ns"] == path.stat().st_mtime_ns
    old = {k: v for k, v in read_record(path).items() if k != "mtime_ns"}  # as an older harness wrote it
    (path.parent / "checkpoint.pkl.verified.json").write_text(json.dumps(old))
    hashed = []
    real = weights.file_digest
    monkeypatch.setattr(weights, "file_digest", lambda p, *a: hashed.append(p) or real(p, *a))
    assert fetch(spec, "checkpoint", quiet=True) == path and hashed == [path]  # re-hashed once...
    assert read_record(path)["mtime_ns"] == path.stat().st_mtime_ns  # ...and the record rewritten
    assert fetch(spec, "checkpoint", quiet=True) == path and hashed == [path]  # then trusted again
    assert len(server.hits("/ckpt")) == 1


# ------------------------------------------------------------------ a broken lock file

def test_lock_file_in_a_missing_folder_is_one_clear_line(tmp_path, server, monkeypatch):
    missing = tmp_path / "nowhere" / "weights_manifest.lock.yaml"
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(missing))
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    with pytest.raises(UserError, match=r"lock file .*nowhere.* does not exist; create it, or set HARNESS_LOCK") as err:
        fetch(spec, "checkpoint", quiet=True)
    assert "\n" not in str(err.value) and server.log == [] and not missing.parent.exists()
    with pytest.raises(UserError, match="does not exist"):
        record_lock(missing, "q2l-test", "checkpoint", "a" * 64, 1, "test")


@pytest.mark.parametrize("text", [
    "q2l-test: oops\n",
    "q2l-test: [1, 2]\n",
    "q2l-test:\n  checkpoint: oops\n",
    "q2l-test:\n  checkpoint:\n    sha256: abc123\n",
    "q2l-test:\n  checkpoint:\n    size: 10\n",
])
def test_malformed_lock_entry_is_one_clear_line(tmp_path, server, capsys, text):
    from harness.cli import main

    lock = tmp_path / "weights_manifest.lock.yaml"
    lock.write_text(text)
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    with pytest.raises(UserError, match=r"lock.yaml: entry 'q2l-test.*fix or delete that entry") as err:
        fetch(spec, "checkpoint", quiet=True)
    assert "\n" not in str(err.value) and server.log == []
    assert main(["download", "q2l-test", "--manifest", str(tmp_path / "manifest.yaml"), "-q"]) == 2
    assert "fix or delete that entry" in capsys.readouterr().err


def test_emptied_lock_entry_is_accepted(tmp_path, server):
    (tmp_path / "weights_manifest.lock.yaml").write_text("q2l-test:\n")  # its role deleted by hand
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert lock_yaml(tmp_path)["q2l-test"]["checkpoint"]["sha256"] == sha(DATA)


def test_without_fcntl_downloads_still_work(tmp_path, server, monkeypatch):
    import harness.download.lock as lock

    monkeypatch.setattr(lock, "fcntl", None)  # as on a platform without advisory locks
    server.routes["/ckpt"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ckpt")})
    path = fetch(spec, "checkpoint", quiet=True)
    assert path.read_bytes() == DATA and not list(path.parent.glob("*.lock"))
    assert lock_yaml(tmp_path)["q2l-test"]["checkpoint"]["sha256"] == sha(DATA)
