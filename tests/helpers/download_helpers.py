"""Shared set-up of the download tests: a loopback server, a throw-away cache, a small manifest."""
import hashlib
import io
import socket
import zipfile
from pathlib import Path

import pytest
from loopback_server import LoopbackServer

from harness.inputs.yaml_files import dump_yaml
from harness.manifest import load_manifest

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache and lock file, short timeouts, and no address but loopback reachable."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(tmp_path / "weights_manifest.lock.yaml"))
    monkeypatch.setenv("HARNESS_RETRIES", "2")
    monkeypatch.setenv("HARNESS_BACKOFF", "0.01")
    monkeypatch.setenv("HARNESS_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("HARNESS_CONNECT_TIMEOUT", "1")
    for name in ("HARNESS_OFFLINE", "HARNESS_GDRIVE_URL", "HARNESS_ZENODO_API", "HARNESS_COCO_URL"):
        monkeypatch.delenv(name, raising=False)
    from harness.download import gdrive
    monkeypatch.setattr(gdrive, "_listings", {})
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        assert host in LOOPBACK, f"a test tried to reach {host}"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


def make_spec(tmp_path, files, model_id="q2l-test", release_folder="Q2L-Test"):
    """Write a one-model manifest with these `files` and load it through harness.manifest."""
    entry = {
        "family": "q2l",
        "arch": {"name": "q2l", "release_folder": release_folder},
        "paper": {"title": "t", "table": "1", "row": "r", "metrics": {"mAP": 1.0}},
        "released": True,
        "files": files,
        "eval": {"resolution": 448, "resize": "squish", "normalize": "imagenet", "image_set": "all",
                 "protocol": "q2l", "batch_size": 16},
    }
    unreleased = dict(entry, released=False, files=None)
    path = tmp_path / "manifest.yaml"
    path.write_text(dump_yaml({"models": {model_id: entry, "mlspl-test": unreleased}}))  # entry and unreleased share fields
    return load_manifest(path)[model_id]


def http_file(url, sha256=None, filename="checkpoint.pkl", more=()):
    return {"filename": filename, "sha256": sha256,
            "sources": [{"type": "http", "url": url}] + [{"type": "http", "url": u} for u in more]}


def zipped(payload):
    """Bytes shaped like torch's zip format (what an unpinned checkpoint must look like to be locked)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", payload)
    return buf.getvalue()


def corrupt_files(folder):
    return sorted(p.name for p in Path(folder).glob("*.corrupt-*"))
