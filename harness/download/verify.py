"""The record kept beside each cached file, a first look at a file's content, and moving a bad
file out of the way."""
import json
import os
import time
import zipfile
from pathlib import Path

from harness.files import git_blob_id, write_atomically


def content_problem(path, role, git_blob=None):
    """Why `path` cannot be the file its role needs (None when it can). Cheap: reads magic bytes, or
    parses a small JSON; it guards the first hash written to the lock file, which is trusted from then on.
    A file known by its git object id (`git_blob`) must have exactly that one."""
    path = Path(path)
    if git_blob is not None and git_blob_id(path) != git_blob:
        return f"is not the file of the authors' repository (its git object id is not {git_blob})"
    if role == "labels":
        with open(path, "rb") as f:
            head = f.read(6)
        return None if head == b"\x93NUMPY" else f"is not a .npy file (it starts with {head!r}: an error page?)"
    if role == "checkpoint":
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":  # torch's zip format; the directory at its end shows it is whole
            return None if zipfile.is_zipfile(path) else "is a truncated zip (torch) file: its end is missing"
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # torch's legacy format: a pickle
            return None
        return f"is not a torch checkpoint (it starts with {head!r}: an error page or a cut-off body?)"
    if role == "train_log":  # Query2Label's main_mlc.py log: text with its `Command:` line
        text = path.read_bytes()[:1 << 20]
        return None if b"Command:" in text else "is not a main_mlc.py training log (no 'Command:' line: an error page?)"
    if role == "config":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            return "is not JSON (an error page or a cut-off body?)"
        if not isinstance(data, dict):
            return f"is JSON but not an object (a {type(data).__name__})"
    return None


def move_aside(path, name_like=None):
    """Rename a file that failed verification so that nothing can use it; return the new path.

    The new name is <name>.corrupt-<timestamp>, <name> taken from `name_like` when given
    (a partial download is named after the file it was meant to become).
    """
    path = Path(path)
    name = Path(name_like).name if name_like else path.name
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    record_path(path).unlink(missing_ok=True)
    return target


def record_path(path):
    return Path(path).with_name(Path(path).name + ".verified.json")


def read_record(path):
    """The sha256, size and modification time measured when the file entered the cache, or None."""
    try:
        record = json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def unchanged_since(path, record):
    """True when the file has the size and modification time its record saw: the cheap check.
    A file replaced in place changes its mtime; a record without one (older harness) never matches."""
    st = Path(path).stat()
    return bool(record) and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns


def write_record(path, sha256, source):
    st = Path(path).stat()
    rec = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "source": source,
           "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomically(record_path(path), json.dumps(rec, indent=1))
    return rec
