"""Locking: one process at a time on a file (exclusive), and weights_manifest.lock.yaml, the
sha256 first seen for each file the manifest leaves unpinned.

The lock file holds {model_id: {role: {sha256, size, source, fetched_at}}}. Once recorded, a file
with another hash is refused, so an unpinned release cannot silently change under a reproduction.
"""
import contextlib
import logging
import re
import time
from pathlib import Path

from harness.errors import UserError
from harness.files import write_atomically
from harness.inputs.environment import lock_file_path
from harness.inputs.yaml_files import dump_yaml, read_yaml_file

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # no advisory locks on this platform: concurrent runs go unguarded
    fcntl = None

HEADER = ("# sha256 observed at the first download of each file the manifest leaves unpinned.\n"
          "# Written by `harness download`; a later file with another hash is refused.\n"
          "# To pin for good, copy a sha256 into weights_manifest.yaml.\n")
SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@contextlib.contextmanager
def exclusive(path, *, quiet=True):
    """Hold an exclusive advisory lock on <path>.lock: another process (or thread) asking for the same
    path waits here until this one is done. The .lock file stays: deleting it would let a waiting
    process lock a file that no longer has a name. Without fcntl, or where the file cannot be
    created (a read-only cache, where nothing is written either), no lock is taken."""
    handle = None
    if fcntl is not None:
        try:
            handle = open(Path(path).with_name(Path(path).name + ".lock"), "a")
        except OSError:
            handle = None
    if handle is None:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                logger.warning(f"waiting for another harness process working on {path}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the handle releases the lock, also when the block raises


def check_folder(path):
    """A lock file must go into a folder that exists: never create one from a mistyped HARNESS_LOCK_FILE."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write the lock file {path}: the folder {path.parent} does not exist; "
                        "create it, or set HARNESS_LOCK_FILE to a file in an existing folder")


def read_lock(path):
    path = lock_file_path(path, writing=False)
    if not path.exists():
        return {}
    data = read_yaml_file(path, "lock file", "fix or delete the file (it is re-recorded at the next download)")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of model ids; fix or delete the file")
    for model_id, roles in data.items():
        _check_entry(path, model_id, roles)
    return {model_id: roles or {} for model_id, roles in data.items()}


def _check_entry(path, model_id, roles):
    """Each model maps roles to {sha256: <64 hex digits>, size: bytes, ...}; an emptied model (`id:`) is fine."""
    if roles is None:
        return
    bad = None
    if not isinstance(model_id, str):
        bad = f"{model_id!r:.40} must be a model id (a text)"
    elif not isinstance(roles, dict):
        bad = f"'{model_id}' must map roles (checkpoint, config) to entries, not {roles!r:.40}"
    else:
        for role, entry in roles.items():
            sha = entry.get("sha256") if isinstance(entry, dict) else None
            if not (isinstance(role, str) and isinstance(sha, str) and SHA256.fullmatch(sha)):
                bad = f"'{model_id}: {role!s:.40}' must be a mapping with a 64-hex-digit sha256, not {entry!r:.60}"
                break
            size = entry.get("size")
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
                bad = f"'{model_id}: {role}: size' must be a number of bytes, not {size!r:.40}"
                break
    if bad:
        raise UserError(f"{path}: entry {bad}; fix or delete that entry (it is re-recorded at the next download)")


def lock_entry(path, model_id, role):
    return _normalised(read_lock(path).get(model_id, {}).get(role))


def _normalised(entry):
    """A lock entry with its sha256 in lower case (hand-edited files may use upper case)."""
    return dict(entry, sha256=entry["sha256"].lower()) if entry else None


def record_lock(path, model_id, role, sha256, size, source, *, keep_existing=False):
    """Write one entry and return the entry the file now holds for (model_id, role). The read, change
    and write happen under a file lock, so concurrent runs never lose each other's entries;
    keep_existing=True leaves an entry another run recorded first in place."""
    path = lock_file_path(path)
    with exclusive(path):
        data = read_lock(path)
        roles = data.setdefault(model_id, {})
        if keep_existing and role in roles:
            return _normalised(roles[role])
        roles[role] = {"sha256": sha256, "size": size, "source": source,
                       "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            write_atomically(path, HEADER + dump_yaml(data, sort_keys=True))
        except OSError as e:
            raise UserError(f"cannot write the lock file {path} ({e.strerror or e}); make it writable, "
                            "or set HARNESS_LOCK_FILE to a writable file")
        return roles[role]
