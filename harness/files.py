"""Files as every part of the harness handles them: the hashes it names them by (sha256 of the
bytes: checkpoints, caches, run arrays, annotations; git's object id: files of the authors'
repositories) and writes a reader never sees half done."""
import hashlib
import os
import secrets
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_id(path):
    """The file's git object id (sha1 of "blob <size>\\0" + content): what a repository's tree names it by."""
    h = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def write_atomically(path, text):
    """Readers see the old text or the new, never half; the temporary name is unique per writer."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
