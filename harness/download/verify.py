"""Hashes, the record kept beside each cached file, and moving a bad file out of the way."""
import hashlib
import json
import os
import time
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path, algorithm="sha256"):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


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
    """The sha256 and size measured when the file entered the cache, or None."""
    try:
        return json.loads(record_path(path).read_text())
    except (OSError, ValueError):
        return None


def write_record(path, sha256, source):
    rec = {"sha256": sha256, "size": Path(path).stat().st_size, "source": source,
           "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = record_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, record_path(path))
    return rec
