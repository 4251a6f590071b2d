"""Google Drive sources through gdown, against a loopback server that answers as Drive does.

gdown is real; only its sessions are pointed at 127.0.0.1 (HARNESS_GDRIVE_URL).
"""
import os
import sys

import pytest
from download_helpers import isolated, make_spec, server, sha  # noqa: F401 (fixtures)
from loopback_server import FakeDrive, file_route

from harness.download import cache_path, fetch
from harness.errors import UserError
from harness.manifest import read_yaml

DATA = os.urandom(2_500_000)


def no_wait(*, seconds, cancel):
    pass


@pytest.fixture
def drive(server, monkeypatch):
    monkeypatch.setenv("HARNESS_GDRIVE_URL", server.url)
    import gdown.download  # noqa: F401 (the gdown package exports a function under the same name)

    # gdown's own wait before a retry (random, up to 2 s here; HARNESS_BACKOFF is the harness's, not gdown's):
    # the retries themselves are what these tests check
    monkeypatch.setattr(sys.modules["gdown.download"], "_wait_or_cancel", no_wait)
    d = FakeDrive(server)
    d.root = d.add_folder("Query2Label models")
    d.sub = d.add_folder("Q2L-Test", d.root)
    d.ckpt = d.add_file(d.sub, "checkpoint.pkl", DATA)
    d.config = d.add_file(d.sub, "config_new.json", b'{"img_size": 448}')
    return d


def folder_file(drive, name, sha256=None, mirror=None):
    sources = [{"type": "gdrive_folder", "folder_id": drive.root, "path": f"Q2L-Test/{name}"}]
    if mirror:
        sources.append({"type": "http", "url": mirror})
    return {"filename": name, "sha256": sha256, "sources": sources}


def test_folder_path_resolves_and_downloads(tmp_path, drive, server):
    spec = make_spec(tmp_path, {"checkpoint": folder_file(drive, "checkpoint.pkl", sha(DATA)),
                                "config": folder_file(drive, "config_new.json")})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert fetch(spec, "config", quiet=True).read_bytes() == b'{"img_size": 448}'
    assert [q["id"] for q in server.queries("/embeddedfolderview")] == [drive.root, drive.sub]  # listed once
    lock = read_yaml((tmp_path / "weights_manifest.lock.yaml").read_text())
    assert lock["q2l-test"]["config"]["source"] == f"gdrive_folder:{drive.root}/Q2L-Test/config_new.json"
    assert "checkpoint" not in lock["q2l-test"]  # pinned in the manifest: nothing to lock


def test_big_file_passes_the_virus_scan_page(tmp_path, drive, server):
    drive.big.add(drive.ckpt)
    spec = make_spec(tmp_path, {"checkpoint": folder_file(drive, "checkpoint.pkl", sha(DATA))})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    asked = server.queries("/download")
    assert "confirm" not in asked[0] and asked[1]["confirm"] == "t" and asked[1]["uuid"] == "0f1e2d3c"


def test_drive_file_by_id_resumes_after_a_drop(tmp_path, drive, server):
    drive.drop_first(drive.ckpt)
    spec = make_spec(tmp_path, {"checkpoint": {"filename": "checkpoint.pkl", "sha256": sha(DATA),
                                               "sources": [{"type": "gdrive_file", "file_id": drive.ckpt}]}})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert server.hits("/download")[-1].startswith("bytes=")
    assert not list(cache_path(spec, "checkpoint").parent.glob("*.part*"))


def test_quota_page_falls_back_to_the_mirror(tmp_path, drive, server):
    drive.quota.add(drive.ckpt)
    server.routes["/mirror/checkpoint.pkl"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": folder_file(drive, "checkpoint.pkl", sha(DATA),
                                                          mirror=server.url + "/mirror/checkpoint.pkl")})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA


def test_quota_page_with_no_working_mirror_explains(tmp_path, drive, server):
    drive.quota.add(drive.ckpt)
    mirror = server.url + "/mirror/missing.pkl"
    spec = make_spec(tmp_path, {"checkpoint": folder_file(drive, "checkpoint.pkl", sha(DATA), mirror=mirror)})
    with pytest.raises(UserError) as err:
        fetch(spec, "checkpoint", quiet=True)
    message = str(err.value)
    assert "Too many users have viewed or downloaded this file recently" in message
    assert "HTTP 404" in message and mirror in message and "--weights-dir" in message
    assert "\n" not in message


def test_missing_path_in_folder(tmp_path, drive):
    spec = make_spec(tmp_path, {"checkpoint": folder_file(drive, "model.pth")})
    with pytest.raises(UserError, match="has no file Q2L-Test/model.pth"):
        fetch(spec, "checkpoint", quiet=True)


def test_drive_file_removed(tmp_path, drive):
    spec = make_spec(tmp_path, {"checkpoint": {"filename": "checkpoint.pkl", "sha256": None,
                                               "sources": [{"type": "gdrive_file", "file_id": "1" + "x" * 32}]}})
    with pytest.raises(UserError, match="Google Drive did not give file"):
        fetch(spec, "checkpoint", quiet=True)


def by_id(drive, mirror=None):
    sources = [{"type": "gdrive_file", "file_id": drive.ckpt}]
    if mirror:
        sources.append({"type": "http", "url": mirror})
    return {"filename": "checkpoint.pkl", "sha256": sha(DATA), "sources": sources}


def redirect_loop(h, query):
    """/uc sends the client back to itself (through the Google host that is rebased here)."""
    h.send_response(302)
    h.send_header("Location", f"https://drive.google.com/uc?id={query.get('id', '')}")
    h.send_header("Content-Length", "0")
    h.end_headers()


def test_redirect_loop_on_a_file_falls_back_to_the_mirror(tmp_path, drive, server):
    server.routes["/uc"] = redirect_loop
    server.routes["/mirror/checkpoint.pkl"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": by_id(drive, mirror=server.url + "/mirror/checkpoint.pkl")})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert len(server.hits("/uc")) > 1 and server.hits("/mirror/checkpoint.pkl")


def test_redirect_loop_while_listing_a_folder_falls_back_to_the_mirror(tmp_path, drive, server):
    server.routes["/uc"] = redirect_loop  # gdown asks /uc for each file's name while listing
    server.routes["/mirror/checkpoint.pkl"] = file_route(DATA)
    spec = make_spec(tmp_path, {"checkpoint": folder_file(drive, "checkpoint.pkl", sha(DATA),
                                                          mirror=server.url + "/mirror/checkpoint.pkl")})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA


def test_redirect_loop_everywhere_is_not_called_no_network(tmp_path, drive, server):
    server.routes["/uc"] = redirect_loop
    spec = make_spec(tmp_path, {"checkpoint": by_id(drive)})
    with pytest.raises(UserError) as err:
        fetch(spec, "checkpoint", quiet=True)
    assert "redirects" in str(err.value) and "no network" not in str(err.value)


def gdown_partials(spec, drive):
    from harness.download import sources
    part = sources.partial_path(cache_path(spec, "checkpoint"), {"type": "gdrive_file", "file_id": drive.ckpt})
    return part, sorted(part.parent.glob(part.name + "*.part"))


def test_partial_that_cannot_be_resumed_starts_again(tmp_path, drive, server, monkeypatch):
    monkeypatch.setenv("HARNESS_RETRIES", "0")
    drive.drop_first(drive.ckpt)
    spec = make_spec(tmp_path, {"checkpoint": by_id(drive)})
    with pytest.raises(UserError, match="no network"):  # a dropped connection: the partial is kept
        fetch(spec, "checkpoint", quiet=True)
    [partial] = gdown_partials(spec, drive)[1]
    assert 0 < partial.stat().st_size < len(DATA)
    # Next run, Drive answers the resume request with the whole file (re-released, or no ranges).
    drive.drops[drive.ckpt] = file_route(DATA, ranges=False, headers={
        "Content-Disposition": 'attachment; filename="checkpoint.pkl"'})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert gdown_partials(spec, drive)[1] == []


def test_several_gdown_partials_start_again(tmp_path, drive, server):
    spec = make_spec(tmp_path, {"checkpoint": by_id(drive)})
    part, _ = gdown_partials(spec, drive)
    part.parent.mkdir(parents=True)
    for tail in ("abcdefgh", "ijklmnop"):  # left by two runs at once: gdown refuses to pick one
        part.with_name(part.name + tail + ".part").write_bytes(b"stale")
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == DATA
    assert gdown_partials(spec, drive)[1] == []


def test_a_refused_resume_is_retried_once_and_not_called_no_network(tmp_path, drive, server, monkeypatch):
    monkeypatch.setenv("HARNESS_RETRIES", "1")
    drive.drops[drive.ckpt] = file_route(DATA, ranges=False, drop_first=100, headers={
        "Content-Disposition": 'attachment; filename="checkpoint.pkl"'})
    spec = make_spec(tmp_path, {"checkpoint": by_id(drive)})
    with pytest.raises(UserError) as err:
        fetch(spec, "checkpoint", quiet=True)
    message = str(err.value)
    assert "did not honor the requested byte range" in message
    assert "no network" not in message and "check the connection" not in message and "\n" not in message
    # each gdown run: the whole file (dropped), then a refused resume; two runs in all
    assert [rng is not None for rng in server.hits("/download")] == [False, True, False, True]
