"""Rows written as they are computed, resumable: a memory-mapped `<name>.partial.npy` and a
progress file (rewritten atomically after each batch) saying how many rows are done. Rows count
as done only while their array exists, so an interrupted run loses at most one batch."""
import json
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from harness.errors import UserError
from harness.files import write_atomically
from harness.records import utc_now


def open_rows(path: str | Path, shape: tuple[int, ...], dtype: DTypeLike = np.float32, fresh: bool = True) -> np.memmap:
    """The partial array at `path`: a new one (unfinished rows NaN: visibly not computed), or the
    one an interrupted run left."""
    path = Path(path)
    if fresh or not path.exists():
        rows = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        rows[:] = np.nan
        return rows
    try:
        rows = np.load(path, mmap_mode="r+")
    except ValueError as e:  # truncated, or not an array file
        raise UserError(f"{path} is damaged ({str(e)[:80]}); delete it to compute its rows again")
    if rows.shape != tuple(shape):
        raise UserError(f"{path} is damaged (holds {rows.shape} rows x columns, not {tuple(shape)}); delete it to "
                        f"compute its rows again")
    return rows


def rows_done(progress: str | Path, partial: str | Path, default: int = 0, most: int | None = None) -> int:
    """How many rows the progress file says are done (default when it or the array is missing);
    one line naming the file when it is damaged (not a count from default to `most`)."""
    progress, partial = Path(progress), Path(partial)
    if not (progress.is_file() and partial.is_file()):
        return default
    try:
        done = json.loads(progress.read_text())["done"]
    except (ValueError, RecursionError, KeyError, TypeError, IndexError):  # not JSON, or no count in it
        done = None
    if not isinstance(done, int) or isinstance(done, bool) or done < default or (most is not None and done > most):
        raise UserError(f"{progress} is damaged (no count of rows done from {default} to {most}); delete it to "
                        f"compute those rows again")
    return done


def save_progress(progress: str | Path, done: int) -> None:
    write_atomically(progress, json.dumps({"done": int(done), "updated_at": utc_now()}, indent=2))
