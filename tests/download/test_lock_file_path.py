"""$HARNESS_LOCK_FILE and the lock file itself: only a regular file (or a new name in an existing
folder) is read or written; a lock that is not valid is one line."""
import os
import socket
import stat

import pytest

from harness.download.lock import read_lock, record_lock
from harness.download.settings import lock_file_for
from harness.errors import UserError

SHA = "ab" * 32


@pytest.mark.parametrize("kind", ["device", "fifo", "socket", "folder", "dangling link", "link to a device"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_before_any_write(tmp_path, monkeypatch, kind):
    path = tmp_path / "lock"
    if kind == "device":
        path = "/dev/null"
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "gone")
    else:
        path.symlink_to("/dev/null")
    before = os.stat(path, follow_symlinks=False).st_mode if kind != "dangling link" else None
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(path))
    with pytest.raises(UserError, match="HARNESS_LOCK_FILE=") as err:
        lock_file_for()
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="lock file"):
        record_lock(path, "m", "checkpoint", SHA, 1, "test")
    if before is not None:
        assert os.stat(path, follow_symlinks=False).st_mode == before
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_link_to_a_regular_lock_file_is_followed_not_replaced(tmp_path):
    real, link = tmp_path / "real.yaml", tmp_path / "link.yaml"
    real.write_text("")
    link.symlink_to(real)
    record_lock(link, "m", "checkpoint", SHA, 1, "test")
    assert link.is_symlink() and read_lock(real)["m"]["checkpoint"]["sha256"] == SHA


@pytest.mark.parametrize("text, says", [
    ("a: &a [1, 2]\nb: *a\n", "anchors and aliases"),
    ('{"m": {"checkpoint": {"sha256": "' + SHA + '"}}, "m": {}}', "given twice"),
    ("m:\n  checkpoint:\n    sha256: " + SHA + "\n    size: lots\n", "size' must be a number of bytes"),
    ("1:\n  checkpoint:\n    sha256: " + SHA + "\n", "must be a model id"),
    ("[" * 100 + "]" * 100, "nested more than"),
])
def test_a_lock_file_that_is_not_valid_is_one_line(tmp_path, text, says, capsys, monkeypatch):
    path = tmp_path / "weights_manifest.lock.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=says) as err:
        read_lock(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
