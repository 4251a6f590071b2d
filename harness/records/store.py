"""Run folders: one per run, never reused, never overwritten; record.json written and read here only.

    <runs>/<model_id>/<run_id>/   record.json, scores.npy (float32 N x C sigmoid probabilities),
                                  labels.npy (uint8 N x C), image_ids.npy (int64 N)
record.json is written last and atomically; a folder without it is an unfinished run. Its contents:
harness.records.schema. A record can be re-scored from its saved scores without a GPU, and it holds
the sha256 of each array (save_arrays returns them), so a copy can be checked (`harness verify`).
"""
import dataclasses
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol, TextIO

import numpy as np
from numpy.typing import ArrayLike

from harness.errors import UserError
from harness.files import file_digest
from harness.records.arrays import load_array
from harness.records.schema import Record

logger = logging.getLogger(__name__)

RECORD = "record.json"
SETTINGS = "settings.json"  # what a resume must repeat


class Reproduction(NamedTuple):
    """What a whole reproduction job did: the models it was asked for, those that failed with why,
    and whether this process reports them (under torchrun only rank 0 does)."""
    model_ids: list
    failed: list  # [(model id, why)]
    reports: bool


class FinishedRun(NamedTuple):
    """A finished run: its folder and its Record (None on torchrun ranks other than 0, which write none)."""
    run_dir: Path
    record: Record | None


class Writer(Protocol):
    """What write_new calls to fill a file: it writes the bytes into the open file it is given. (A Protocol,
    not a Callable: mypy infers the `lambda f, a=array: ...` of a loop only against a Protocol.)"""
    def __call__(self, file: BinaryIO, /) -> object: ...


def is_finished(run_dir: str | Path) -> bool:
    """Whether a run folder holds its record (written last: a folder without one is unfinished)."""
    return (Path(run_dir) / RECORD).exists()


def utc_now() -> str:
    """The time stamps of records: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


def new_run_dir(runs_root: str | Path, model_id: str) -> Path:
    """Create <runs_root>/<model_id>/<run_id>/ exclusively and return it."""
    if not model_id or "/" in model_id or model_id.startswith("."):
        raise UserError(f"bad model id for a run folder: {model_id!r}")
    parent = Path(runs_root) / model_id
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        run_dir = parent / new_run_id()
        try:
            run_dir.mkdir()  # fails if it exists: a folder is never reused
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run folder under {parent}")


def check_runs_root(runs_root: str | Path, flag: str = "--runs") -> None:
    """Before any model is built: the runs folder is a folder, or can be made one."""
    root = Path(runs_root)
    existing = next((p for p in [root, *root.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{flag} {runs_root}: {existing} is a file, not a folder; pass a runs folder, e.g. {flag} runs")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {runs_root}: {existing} is not writable; pass a folder you can write to")


def hold_run(run_dir: str | Path) -> TextIO:
    """An exclusive lock on a run folder while it is evaluated (an open file: closing it releases the
    lock, and so does the end of the process). A second process gets one line naming the holder."""
    handle = open(Path(run_dir) / ".in-progress", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise UserError(f"run {run_dir} is in progress (pid {pid}); wait for it to finish, or stop that "
                        f"process and resume with --resume {run_dir}")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def write_new(path: str | Path, write: Writer) -> None:
    """Write through a temporary file, then link it into place: never replaces an existing file."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; results are never overwritten (start a new run)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and fails if `path` appeared meanwhile
        except OSError as e:
            if isinstance(e, FileExistsError):
                raise FileExistsError(f"{path} exists; results are never overwritten (start a new run)")
            os.replace(tmp, path)  # a filesystem without hard links
    finally:
        tmp.unlink(missing_ok=True)


def save_arrays(run_dir: str | Path, scores: ArrayLike, labels: ArrayLike, image_ids: ArrayLike, keep_equal: bool = False,
                masks: ArrayLike | None = None) -> dict[str, str]:
    """scores.npy (float32, or float16 as an fp16 run scored them: ties then sort as the authors'),
    labels.npy (uint8), image_ids.npy (int64) and, for C-Tran, masks.npy (int8 -1/0/1), checked for
    shape. Returns {key of SCORE_FILES (and "masks"): sha256 of the file as written}: the record's
    `digests`, which `harness verify` and the report check the files against.

    keep_equal=True (finishing an interrupted finish): a file already there is kept when it holds
    the same array, and refused otherwise; never overwritten either way."""
    scores, labels, image_ids = np.asarray(scores), np.asarray(labels), np.asarray(image_ids)
    if scores.ndim != 2 or labels.shape != scores.shape or image_ids.shape != (scores.shape[0],) or \
            (masks is not None and np.shape(masks) != scores.shape):
        raise ValueError(f"shapes do not agree: scores {scores.shape}, labels {labels.shape}, "
                         f"image_ids {image_ids.shape}" + ("" if masks is None else f", masks {np.shape(masks)}"))
    arrays: dict[str, np.ndarray] = {"scores": scores.astype(np.float16 if scores.dtype == np.float16 else np.float32),
              "labels": (labels > 0).astype(np.uint8), "image_ids": image_ids.astype(np.int64)}
    if masks is not None:
        arrays["masks"] = np.asarray(masks).astype(np.int8)
    digests = {}
    for key, array in arrays.items():
        path = Path(run_dir) / f"{key}.npy"
        if keep_equal and path.exists():
            if not np.array_equal(load_array(path, key), array, equal_nan=array.dtype.kind == "f"):
                cause = ("it is not the scores this run scored: it was changed" if key == "scores" else
                         "the annotation file changed since the run started")
                raise UserError(f"{path} does not match this run's data ({cause}); start a new run")
        else:
            write_new(path, lambda f, a=array: np.save(f, a))
        digests[key] = file_digest(path)  # the file as it lies on disk, read back once
    return digests


def write_record(run_dir: str | Path, record: Record | dict[str, Any]) -> Path:
    """Write a Record (or a record's dict, checked against the schema) as record.json, atomically;
    refuse if the folder already has one."""
    data = record.to_json() if isinstance(record, Record) else Record.from_json(record).to_json()
    text = json.dumps(data, indent=2, allow_nan=False, default=_json_default) + "\n"
    write_new(Path(run_dir) / RECORD, lambda f: f.write(text.encode()))
    return Path(run_dir) / RECORD


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def run_folder(path: str | Path) -> Path:
    """The run folder a user named: itself, or the folder of the record.json named in its place."""
    path = Path(path)
    return path.parent if path.name == RECORD and path.is_file() else path


def read_record(run_dir: str | Path) -> Record:
    """The Record of a finished run folder; one line naming the problem when it cannot be read."""
    if Path(run_dir).is_file():
        raise UserError(f"{run_dir} is a file; pass the run folder that holds {RECORD}")
    path = Path(run_dir) / RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no {RECORD} (an unfinished run?); pass a finished run folder")
    except (ValueError, RecursionError) as e:  # bad JSON or text, an integer too long, nesting too deep
        raise UserError(f"{path} is not valid JSON ({str(e)[:120]}); the record is damaged")
    except OSError as e:  # e.g. a folder named record.json
        raise UserError(f"{path} cannot be read ({e.strerror}); the record is damaged")
    try:
        return dataclasses.replace(Record.from_json(record), folder=str(run_dir))
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {e}")


def unfinished_runs(runs_root: str | Path, model_id: str) -> list[Path]:
    """A model's interrupted runs: folders holding settings.json but no record yet, oldest first."""
    folder = Path(runs_root) / model_id
    return sorted(p for p in folder.glob("*") if (p / SETTINGS).is_file() and not is_finished(p))


def refuse_changed_settings(run_dir: str | Path, saved: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """One line naming the fields of `settings` that differ from the interrupted run's `saved` ones."""
    changed = [k for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise UserError(f"cannot resume {run_dir}: {', '.join(changed)} differ from the interrupted run; "
                        f"use the same settings or start a new run")


def read_settings(path: str | Path) -> dict[str, Any]:
    """A run's settings.json (what a resume must repeat) as a dict; one line naming the file when damaged."""
    path = Path(path)
    try:
        settings = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:  # not JSON, not text, nesting too deep
        settings, why = None, f"not valid JSON: {str(e)[:120]}"
    else:
        why = f"a JSON {type(settings).__name__}, not an object"
    if not isinstance(settings, dict):
        raise UserError(f"{path} is damaged ({why}); start a new run, or delete {path.parent}")
    return settings


def _warn(message: str) -> None:
    logger.warning(f"harness: {message}")


def iter_records(runs_root: str | Path, on_problem: Callable[[str], object] = _warn) -> Iterator[tuple[Path, Record]]:
    """Yield (run_dir, record) for every finished run under runs_root, oldest first.

    Folders without record.json (unfinished runs) are skipped quietly; a record that cannot be
    read is skipped and reported through on_problem(message).
    """
    root = Path(runs_root)
    if not root.is_dir():
        return
    for path in sorted(root.glob(f"*/*/{RECORD}")):
        try:
            yield path.parent, read_record(path.parent)
        except UserError as e:
            on_problem(f"skipping {path.parent}: {e}")


def complete_run(runs_root: str | Path, model_id: str, batch_size: int | None = None, amp: str | None = None,
                 kind: str = "eval") -> Path | None:
    """The newest finished, non-smoke run of this kind and model with these settings, or None."""
    found = []
    for record_file in (Path(runs_root) / model_id).glob("*/record.json"):
        try:
            record = read_record(record_file.parent)
        except UserError:  # a damaged record is no complete run
            continue
        ev = record.eval
        same_amp = (ev.get("amp_source") != "--amp" if amp is None  # the paper's choice, not a forced one
                    else ev.get("amp", False) == (False if amp == "off" else amp))
        same_batch = (ev.get("batch_size_source") != "--batch-size" if batch_size is None  # the authors' choice
                      else ev.get("batch_size") == batch_size)
        if record.kind == kind and not record.smoke and same_batch and same_amp:
            found.append(record_file.parent)
    return max(found, key=lambda p: p.name) if found else None
