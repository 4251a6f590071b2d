"""Rows written as they are computed, resumable: a memory-mapped `<name>.partial.npy` and a
progress file (rewritten atomically after each batch) saying how many rows are done and the sha256
of those rows' bytes. Rows count as done only while their array exists, so an interrupted run loses
at most one batch; a resume keeps them only when they still have the digest written with them."""
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from harness.errors import UserError
from harness.files import write_atomically
from harness.records import utc_now
from harness.records.arrays import load_array

logger = logging.getLogger(__name__)


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
    for path in (progress, partial):
        if path.exists() and not path.is_file():  # never a count of 0 that a write then fails on
            raise UserError(f"{path} is a folder or a special file, not the run's {path.name}; remove it, then "
                            f"resume again")
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


def save_progress(progress: str | Path, done: int, rows_sha256: str | None = None) -> None:
    """The count of rows done and (where kept) the sha256 of their bytes, which a resume checks."""
    saved = {"done": int(done), "updated_at": utc_now(), **({"rows_sha256": rows_sha256} if rows_sha256 else {})}
    write_atomically(progress, json.dumps(saved, indent=2))


def kept_rows(progress: str | Path, partial: str | Path, done: int, start: int, stop: int, batch_size: int,
              shape: tuple[int, int]) -> tuple[int, Any, dict[str, Any] | None]:
    """Where a resume starts and what it keeps: (first row to score, a running sha256 of the kept
    rows' bytes to go on with, {"rows_sha256", "checked"} or None when nothing is kept).

    The rows `start` .. `done` of `partial` (shape `shape`) must have the digest the progress file
    was written with (a progress file of an older harness has none: kept, said, recorded unchecked)
    and hold scores (never NaN: rows not scored). A count off a batch boundary (rows are scored in
    whole batches) goes back to the last boundary: the rows after it are scored again in the batch
    an uninterrupted run scores them in, so their bits are that run's."""
    n = done - start
    if n <= 0:
        return done, hashlib.sha256(), None
    try:
        rows = load_array(partial, "partial rows", ndim=len(shape), mmap_mode="r")
    except UserError as e:
        raise UserError(f"{partial} is damaged ({str(e)[:120]}); delete it to compute its rows again")
    if rows.shape != tuple(shape):
        raise UserError(f"{partial} is damaged (holds {rows.shape} rows x columns, not {tuple(shape)}); delete it to "
                        f"compute its rows again")
    written = json.loads(Path(progress).read_text()).get("rows_sha256")
    digest = hashlib.sha256(np.ascontiguousarray(rows[:n]).tobytes())
    if written is not None and digest.hexdigest() != written:
        raise UserError(f"the first {n} rows of {partial} are not the rows {Path(progress).name} was written with "
                        f"(sha256 {digest.hexdigest()[:12]}, written {str(written)[:12]}): they were changed; delete "
                        f"{Path(partial).name} and {Path(progress).name} to score them again")
    unscored = np.flatnonzero(~np.isfinite(np.asarray(rows[:n], dtype=np.float64)).all(axis=1))
    if len(unscored):
        raise UserError(f"{Path(progress).name} counts {n} rows done but row(s) {', '.join(map(str, unscored[:5] + start))} "
                        f"of {partial} were never scored (NaN): the progress file was changed; delete "
                        f"{Path(partial).name} and {Path(progress).name} to score them again")
    if written is None:
        logger.warning(f"{progress} keeps no digest of its rows (an older harness wrote it): {n} rows kept unchecked; "
                       f"the record says so")
    whole = n - n % batch_size if done != stop else n
    if whole != n:
        logger.warning(f"{progress} counts {n} rows, not a whole number of batches of {batch_size}: scoring again from "
                       f"row {start + whole}, so every batch is the one an uninterrupted run scores")
        digest = hashlib.sha256(np.ascontiguousarray(rows[:whole]).tobytes())
    return start + whole, digest, {"rows_sha256": digest.hexdigest() if whole else None, "checked": written is not None}
