"""Reading a saved array (scores, labels, masks, partial rows, a decode cache) that a user or another
machine handed over: the one reader of every .npy the harness reads. Never unpickled; the header is
checked (dtype, shape, and that the file holds exactly the bytes it announces) BEFORE anything is
allocated, so a 1 KB file claiming 10^12 rows is one line, not an allocation of terabytes."""
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from harness.errors import UserError
from harness.files import file_digest

if TYPE_CHECKING:  # for the annotation only
    from harness.records.schema import Record

MAGIC = b"\x93NUMPY"
FIX = "pass a .npy array saved with numpy.save"


def _kind(head: bytes) -> str:
    """What a file that is not a .npy seems to be, from its first bytes."""
    if head.startswith(b"\x80"):
        return "a Python pickle, never unpickled"
    if head.startswith(b"PK"):
        return "a zip archive (an .npz? pass one of its arrays)"
    if not head:
        return "an empty file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data, not a .npy array"
    if all(c.isprintable() or c.isspace() for c in text):
        return f"a text file (it starts {text[:24]!r})"
    return "binary data, not a .npy array"


def read_header(path: str | Path, what: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of the .npy at `path`, checked against its size.
    A missing path, a folder, a FIFO or device (never opened: a FIFO would block), a symlink loop,
    a non-.npy file, an object (pickled) array or a size other than its header's is one line."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} file not found: {path}")
    except OSError as e:  # a symlink loop, a name too long, a part of the path that is a file
        raise UserError(f"cannot read {what} from {path} ({e.strerror}); {FIX}")
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what}: {path} is a folder; {FIX}")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what}: {path} is not a regular file (a FIFO, socket or device); {FIX}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + 2)
            if not head.startswith(MAGIC) or len(head) < len(MAGIC) + 2:
                raise UserError(f"{what}: {path} is {_kind(head + f.read(32))}; {FIX}")
            version = (head[-2], head[-1])
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                raise UserError(f"{what}: {path} is a .npy of format version {version[0]}.{version[1]}, which this "
                                f"harness does not read; save it again with numpy.save")
            shape, fortran, dtype = readers[version](f)
            offset = f.tell()
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot read {what} from {path} ({e.strerror}); {FIX}")
    except ValueError as e:  # a header numpy cannot parse
        raise UserError(f"{what}: {path} has a damaged .npy header ({str(e)[:80]}); {FIX}")
    if dtype.hasobject:
        raise UserError(f"{what}: {path} holds Python objects (a pickled array), never unpickled; {FIX}")
    expected = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    if st.st_size != expected:
        raise UserError(f"{what}: {path} is damaged: its header announces {shape} x {dtype} ({expected:,} bytes) "
                        f"but the file holds {st.st_size:,} bytes; {FIX}")
    return shape, dtype, fortran, offset


def load_run_array(run_dir: str | Path, record: "Record", key: str, *,
                   mmap_mode: Literal["r"] | None = None) -> np.ndarray:
    """A run folder's array `key` (scores, labels, image_ids, masks) as its record names it, checked
    against the sha256 the record took when it wrote the file (records that keep one): a file edited
    after the run is refused, never rescored or compared as if it were the run's."""
    name = record.files.get(key, f"{key}.npy")
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise UserError(f"{run_dir}/record.json names its {key} file {name!r}, a path outside the run folder; "
                        f"the record is damaged")
    path = Path(run_dir) / name
    array = load_array(path, key, mmap_mode=mmap_mode)
    expected = (record.digests or {}).get(key)
    if isinstance(expected, str) and file_digest(path) != expected:
        raise UserError(f"{path} is not the file its run wrote (sha256 {file_digest(path)[:12]}, recorded "
                        f"{expected[:12]}): it was changed after the run; `harness verify {run_dir}` says more")
    return array


def load_array(path: str | Path, what: str, *, ndim: int | None = None, shape: tuple[int, ...] | None = None,
               kinds: str | None = None, mmap_mode: Literal["r"] | None = None) -> np.ndarray:
    """The .npy at `path` (a memory map with mmap_mode), after read_header's checks and, where given,
    its number of dimensions, exact shape and dtype kinds (numpy's kind letters, e.g. "fiub")."""
    found, dtype, _, _ = read_header(path, what)
    if ndim is not None and len(found) != ndim:
        raise UserError(f"{what}: {path} holds a {len(found)}-D array {found}, not {ndim}-D; {FIX}")
    if shape is not None and found != tuple(shape):
        raise UserError(f"{what}: {path} holds {found}, not {tuple(shape)}")
    if kinds is not None and dtype.kind not in kinds:
        raise UserError(f"{what}: {path} holds {dtype} values, not numbers; {FIX}")
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except (ValueError, OSError, EOFError) as e:  # changed between the check and the read
        raise UserError(f"cannot read {what} from {path} ({str(e)[:80]}); {FIX}")
