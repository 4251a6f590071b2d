"""Run records: one folder per run, never reused, never overwritten (schema 1).

The record is the only contract between running and reporting: a report reads records only, and
a record can be re-scored from its saved scores without a GPU.

    <runs>/<model_id>/<run_id>/   record.json, scores.npy (float32 N x C sigmoid probabilities),
                                  labels.npy (uint8 N x C), image_ids.npy (int64 N)
record.json is written last and atomically; a folder without it is an unfinished run.

    schema 1; kind: eval | bench | train; run_id "20261122T010203Z-3f9a"
    model:       {id, family, arch, paper (the manifest's paper dict)}
    checkpoint:  {path, sha256, pinned, random_weights}
    dataset:     {name, root, image_set: all|annotated, n_images, fingerprint
                  {annotations_sha256, n_images, labels_sha256}, smoke_subset}
    eval:        {protocol: q2l|asl|mlspl, resolution, resize, normalize, batch_size, dtype, amp,
                  device, limit}
    metrics:     exactly what harness.metrics.compute_metrics returns
    timings:     {wall_s, images_per_s}
    measurement: {peak_vram_mib, energy_j_per_image, gpu_util_mean, power_w_mean,
                  torch_max_allocated_mib, torch_max_reserved_mib, peak_rss_mib,
                  reasons: {field: why it is null}, ...}
    environment: see environment()
    started_at, finished_at (ISO-8601 UTC); smoke: bool; smoke_reasons: [...]
    files:       {scores: scores.npy, labels: labels.npy, image_ids: image_ids.npy}
A "bench" record has no metrics/dataset/files: it holds bench {...} (harness.measure) with
measurement, environment, model, times and smoke (true with random weights: it measures cost).
"""
import json
import os
import platform
import re
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from harness import __version__
from harness.errors import UserError
from harness.manifest import PACKAGE_DATA, REPO_ROOT

SCHEMA = 1
RECORD = "record.json"
KINDS = ("eval", "bench", "train")
REQUIRED = ("schema", "kind", "run_id", "model", "started_at", "finished_at", "smoke")
REQUIRED_BY_KIND = {"eval": ("dataset", "eval", "metrics", "files"), "bench": ("bench",), "train": ()}


def utc_now():
    """The time stamps of records: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(now=None):
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


def new_run_dir(runs_root, model_id):
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


def check_runs_root(runs_root, flag="--out"):
    """Before any model is built: the runs folder is a folder, or can be made one."""
    root = Path(runs_root)
    existing = next((p for p in [root, *root.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{flag} {runs_root}: {existing} is a file, not a folder; pass a runs folder, e.g. {flag} runs")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {runs_root}: {existing} is not writable; pass a folder you can write to")


def hold_run(run_dir):
    """An exclusive lock on a run folder while it is evaluated (an open file: closing it releases the
    lock, and so does the end of the process). A second process gets one line naming the holder."""
    import fcntl

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


def write_new(path, write):
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


def save_arrays(run_dir, scores, labels, image_ids, keep_equal=False):
    """scores.npy (float32, or float16 as an fp16 run scored them: ties then sort as the authors'),
    labels.npy (uint8), image_ids.npy (int64), checked for shape.

    keep_equal=True (finishing an interrupted finish): a file already there is kept when it holds
    the same array, and refused otherwise; never overwritten either way."""
    scores, labels, image_ids = np.asarray(scores), np.asarray(labels), np.asarray(image_ids)
    if scores.ndim != 2 or labels.shape != scores.shape or image_ids.shape != (scores.shape[0],):
        raise ValueError(f"shapes do not agree: scores {scores.shape}, labels {labels.shape}, "
                         f"image_ids {image_ids.shape}")
    for name, array in (("scores.npy", scores.astype(np.float16 if scores.dtype == np.float16 else np.float32)), ("labels.npy", (labels > 0).astype(np.uint8)),
                        ("image_ids.npy", image_ids.astype(np.int64))):
        path = Path(run_dir) / name
        if keep_equal and path.exists():
            if not np.array_equal(np.load(path), array):
                raise UserError(f"{path} does not match this run's data (did the annotations change?); "
                                "start a new run")
            continue
        write_new(path, lambda f, a=array: np.save(f, a))


def validate_record(record):
    """Raise ValueError naming what a record lacks (a bug in the code that built it)."""
    if not isinstance(record, dict):
        raise ValueError("a record must be a dict")
    missing = [k for k in REQUIRED if k not in record]
    if record.get("kind") not in KINDS:
        raise ValueError(f"record kind must be one of {KINDS} (got {record.get('kind')!r})")
    missing += [k for k in REQUIRED_BY_KIND[record["kind"]] if k not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    if record["schema"] != SCHEMA:
        raise ValueError(f"record schema {record['schema']!r}; this harness writes schema {SCHEMA}")
    if not isinstance(record["model"], dict) or "id" not in record["model"]:
        raise ValueError("record model must be a dict with an 'id'")
    problem = _type_problem(record)
    if problem:
        raise ValueError(problem)


SECTIONS = ("model", "checkpoint", "dataset", "eval", "metrics", "timings", "measurement", "environment", "bench",
            "train")
TEXTS = ("run_id", "started_at", "finished_at")


def _is_number(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _type_problem(record):
    """What in a record has the wrong type for the code that reads it (a damaged or hand-edited file)."""
    for key in SECTIONS:
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"'{key}' must be an object, not {type(record[key]).__name__}"
    for key in TEXTS:
        if not isinstance(record.get(key), (str, type(None))):
            return f"'{key}' must be text"
    if not isinstance(record["smoke"], bool) or not isinstance(record.get("smoke_reasons") or [], list):
        return "'smoke' must be true/false and 'smoke_reasons' a list"
    for key, value in (record.get("metrics") or {}).items():
        if key.endswith("_ci95"):
            if value is not None and not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
                return f"metrics '{key}' must be a pair of numbers"
        elif key in NUMERIC_METRICS and not _is_number(value):
            return f"metrics '{key}' must be a number, not {type(value).__name__}"
    return None


NUMERIC_METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "top3_CP", "top3_CR", "top3_CF1", "top3_OP",
                   "top3_OR", "top3_OF1")


def write_record(run_dir, record):
    """Write record.json atomically; refuse if the folder already has one."""
    validate_record(record)
    text = json.dumps(record, indent=2, allow_nan=False, default=_json_default) + "\n"
    write_new(Path(run_dir) / RECORD, lambda f: f.write(text.encode()))
    return Path(run_dir) / RECORD


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_record(run_dir):
    path = Path(run_dir) / RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no {RECORD} (an unfinished run?); pass a finished run folder")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); the record is damaged")
    except OSError as e:  # e.g. a folder named record.json
        raise UserError(f"{path} cannot be read ({e.strerror}); the record is damaged")
    try:
        validate_record(record)
    except ValueError as e:
        raise UserError(f"{path}: {e}")
    return record


def _warn(message):
    print(f"harness: {message}", file=sys.stderr)


def iter_records(runs_root, on_problem=_warn):
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


# ---------------------------------------------------------------- environment

def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args):
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _gpu(torch, device_index):
    """Name, driver, uuid and memory of torch's GPU `device_index`, from NVML (asked by UUID:
    CUDA_VISIBLE_DEVICES renumbers indices), else from torch, else None."""
    uuid = None
    if torch is not None and torch.cuda.is_available():
        uuid = torch.cuda.get_device_properties(device_index).uuid
    try:
        import pynvml

        from harness.measure.nvml import handle_by_uuid

        pynvml.nvmlInit()
        try:
            handle = handle_by_uuid(uuid)[0] if uuid else pynvml.nvmlDeviceGetHandleByIndex(device_index)
            return {"name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                    "memory_total_mib": int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20)}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library or no GPU: fall back to torch
        pass
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device_index)
        return {"name": props.name, "driver": None, "uuid": str(getattr(props, "uuid", "")) or None,
                "memory_total_mib": int(props.total_memory // 2**20)}
    return None


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def matching_environment_file(python_version, torch_version, folder=None):
    """The first environments/*.txt|*.yml|*.yaml naming this torch and Python version, else None."""
    folder = Path(folder) if folder else (PACKAGE_DATA / "environments").resolve()
    if not torch_version or not folder.is_dir():
        return None
    torch_base = torch_version.split("+")[0]
    py_minor = ".".join(python_version.split(".")[:2])
    torch_re = re.compile(rf"\btorch\s*(==|=|:|\s)\s*{re.escape(torch_base)}(?![\d.])", re.I)
    python_re = re.compile(rf"\bpython\s*(==|=|:|\s)\s*{re.escape(py_minor)}(?!\d)", re.I)
    for path in sorted(p for ext in ("*.txt", "*.yml", "*.yaml") for p in folder.glob(ext)):
        text = path.read_text(errors="replace")
        if torch_re.search(text) and python_re.search(text):
            return f"environments/{path.name}"
    return None


def image_libraries():
    """Pillow and its JPEG decoder: resize and decode differ by +-1/255 on some JPEGs between versions."""
    try:
        import PIL
        from PIL import features
    except ImportError:
        return {"pillow": None, "libjpeg_turbo": None, "libjpeg": None}

    def version(get, name):
        try:
            return get(name)
        except Exception:  # an old Pillow without version reporting
            return None

    return {"pillow": PIL.__version__, "libjpeg_turbo": version(features.version_feature, "libjpeg_turbo"),
            "libjpeg": version(features.version_codec, "jpg")}


def environment(device_index=0):
    """Library versions, hardware and code version of this process, for a record."""
    try:
        import torch
    except ImportError:
        torch = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    if commit is None:  # a copy without .git (a GPU machine): the commit it was copied from, if given
        commit = os.environ.get("HARNESS_GIT_COMMIT") or None
    python = platform.python_version()
    torch_version = torch.__version__ if torch is not None else None
    cudnn = None
    if torch is not None and torch.backends.cudnn.is_available():
        cudnn = torch.backends.cudnn.version()
    return {
        "python": python,
        "torch": torch_version,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "numpy": np.__version__,
        **image_libraries(),
        "cuda": torch.version.cuda if torch is not None else None,
        "cudnn": cudnn,
        "gpu": _gpu(torch, device_index),
        "cpu": cpu_name(),
        "platform": platform.platform(),
        "harness": __version__,
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "matches_environment_file": matching_environment_file(python, torch_version),
    }
