"""Loading released checkpoints safely: no pickle ever runs code, every key is accounted for.

- The pickle is read with torch's weights-only unpickler plus the few numpy types the authors'
  files hold (`best_mAP` is a numpy float64). Anything else is refused; `trust=True`
  (`--trust-checkpoint`) lifts that only for a file whose sha256 the manifest pins.
- Keys lose DataParallel's `module.` prefix; loading is strict, and a mismatch says which keys
  differ and why (another resolution, another transformer size, another model).
- A Q2L checkpoint's transformer sizes are read from its weights and checked against its
  `config_new.json` and the model built from the manifest. Nothing in the JSON is applied:
  its `resume` entry never replaces the checkpoint (the authors' issue #47).
- After the first verified load a safetensors copy is kept, so later loads unpickle nothing.
"""
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness.download.verify import read_record, unchanged_since
from harness.errors import UserError
from harness.files import file_digest
from harness.models.q2l import checkpoint_sizes, config_problems

logger = logging.getLogger(__name__)

# numpy pieces of a pickled float64 scalar, under numpy 2 and numpy 1 names.
_NUMPY_SCALAR = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
SAFE_NUMPY_GLOBALS = [
    (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),
    np.dtype,
    type(np.dtype(np.float64)),  # numpy.dtypes.Float64DType
]


# ---------------------------------------------------------------- reading files

def sha256_of(path, *, fetched=False):
    """The file's sha256, hashed in full. fetched=True: a file the download layer has just checked
    in its cache may take the hash from its download record (when its size and mtime match); a
    file named by the user never does, since a record beside it proves nothing."""
    record = read_record(path) if fetched else None
    if record and unchanged_since(path, record) and record.get("sha256"):
        return record["sha256"]
    return file_digest(path)


def _unsafe_globals(path, error):
    """The names the file needs beyond the allow-list ([] when the failure is of another kind)."""
    found = re.findall(r"GLOBAL (\S+?)[ .]*(?:was not|whose module)", str(error))
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path) or found
    except Exception:  # legacy (non-zip) files: the error names the first one
        pass
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in SAFE_NUMPY_GLOBALS}
    return [g for g in found if g not in allowed]


def read_pickle(path, *, trust=False, pinned_sha256=None):
    """The object in a torch checkpoint file, unpickled without running code.

    With trust=True a file needing more than the allow-list is unpickled in full, but only
    when its sha256 equals `pinned_sha256` (the manifest's pin for this file).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}; check the path or run `harness download`")
    except Exception as e:
        needed = _unsafe_globals(path, e) if "Weights only load failed" in str(e) else []
        if not needed:
            reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", str(e), re.S)
            reason = reason.group(1) if reason else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            raise UserError(f"{path} is not a readable torch checkpoint ({reason}); download it again") from None
    needed = ", ".join(needed)
    if not trust:
        raise UserError(f"{path} needs {needed} to unpickle, which could run code: refused; if you trust "
                        f"this file, pass --trust-checkpoint (accepted only when the manifest pins its sha256)")
    sha = sha256_of(path)  # in full: this decides whether code may run
    if not pinned_sha256:
        raise UserError(f"--trust-checkpoint refused for {path}: the manifest pins no sha256 for it, so "
                        f"nothing says it is the released file; pin its sha256 ({sha}) in the manifest first")
    if sha != pinned_sha256:
        raise UserError(f"--trust-checkpoint refused for {path}: sha256 {sha} is not the pinned "
                        f"{pinned_sha256}; it is not the released file")
    return torch.load(path, map_location="cpu", weights_only=False)


def find_state_dict(obj):
    """The weights inside a checkpoint: Q2L keeps them in 'state_dict', ASL in 'model'."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("the checkpoint holds no state dict (expected a dict of tensors, or one under "
                        "'state_dict' or 'model'); is it a model checkpoint?")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_config(path):
    """The authors' config_new.json with booleans written as strings ("False") made booleans."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read config {path} ({e}); download it again")
    if not isinstance(data, dict):
        raise UserError(f"config {path} is not a JSON object; download it again")
    return {k: (v.lower() == "true" if isinstance(v, str) and v.lower() in ("true", "false") else v)
            for k, v in data.items()}


# ---------------------------------------------------------------- strict loading

def _likely_cause(model, model_sd, ckpt_sd, wrong):
    odd = wrong + [k for k in model_sd if k not in ckpt_sd] + [k for k in ckpt_sd if k not in model_sd]
    if sum(k.startswith("backbone.0.") for k in odd) > len(odd) // 2:
        return "likely cause: wrong model: this checkpoint is for another backbone or architecture"
    got, want = checkpoint_sizes(ckpt_sd), checkpoint_sizes(model_sd)
    if got.get("grid") and want.get("grid") and got["grid"] != want["grid"]:
        stride = getattr(model, "img_size", 0) // want["grid"][0]
        res = f"{got['grid'][0] * stride} x {got['grid'][1] * stride}" if stride else f"a {got['grid']} grid"
        return (f"likely cause: wrong resolution: the checkpoint's position table (backbone.1.pe) is for "
                f"{res} inputs, the model is built for {getattr(model, 'img_size', '?')} "
                f"(pick the model entry for that resolution)")
    differ = {k: (got.get(k), want.get(k)) for k in ("hidden_dim", "dim_feedforward", "enc_layers", "dec_layers",
                                                     "num_class") if got.get(k) != want.get(k)}
    if differ:
        text = ", ".join(f"{k}: checkpoint {c}, model {m}" for k, (c, m) in differ.items())
        return (f"likely cause: the checkpoint has other sizes than the model ({text}); "
                f"fix the model entry's arch in the manifest")
    return "likely cause: wrong model: this checkpoint is for another architecture"


def load_state_dict_strict(model, state_dict, source="checkpoint"):
    """model.load_state_dict(strict) that explains a mismatch in a few lines (UserError).

    BatchNorm `num_batches_tracked` counters (present or not depending on the inplace_abn
    version that saved a TResNet) do not count: missing ones keep the model's value.
    """
    model_sd = model.state_dict()
    sd = dict(state_dict)
    for key in [k for k in sd if k.endswith("num_batches_tracked") and k not in model_sd]:
        del sd[key]
    for key in model_sd:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = model_sd[key]
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    wrong = [k for k in model_sd if k in sd and sd[k].shape != model_sd[k].shape]
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
        lines = [f"{source} does not fit the model:"]
        if missing:
            lines.append(f"  {len(missing)} missing: {few(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected: {few(unexpected)}")
        if wrong:
            shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(model_sd[k].shape)}" for k in wrong]
            lines.append(f"  {len(wrong)} of another shape (checkpoint vs model): {few(shapes)}")
        lines.append("  " + _likely_cause(model, model_sd, sd, wrong))
        raise UserError("\n".join(lines))
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------- the safetensors copy

def _cache_file(cache_dir, name, sha):
    return Path(cache_dir) / f"{name}-{sha[:16]}.safetensors"


def _write_cache(model, target, sha, info):
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"source_sha256": sha, **{k: str(v) for k, v in info.items() if v is not None}}
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, target)




# ---------------------------------------------------------------- reading a checkpoint once

def read_state(path, *, sha256, cache_dir=None, name=None, trust=False, pinned_sha256=None):
    """(state dict, {"epoch", "best_mAP"}, loaded_from) of checkpoint `path`, read once: from its
    safetensors copy when one exists for this sha256 (nothing unpickled), else safely unpickled."""
    cached = _cache_file(cache_dir, name or Path(path).stem, sha256) if cache_dir else None
    if cached is not None and cached.is_file():
        with safe_open(str(cached), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("source_sha256") == sha256:
            info = {"epoch": _num(meta.get("epoch"), int), "best_mAP": _num(meta.get("best_mAP"), float)}
            return load_file(str(cached)), info, cached
    obj = read_pickle(path, trust=trust, pinned_sha256=pinned_sha256)
    meta = obj if isinstance(obj, dict) else {}
    info = {"epoch": _num(meta.get("epoch"), int), "best_mAP": _num(meta.get("best_mAP"), float)}
    return find_state_dict(obj), info, Path(path)


def keep_safetensors_copy(model, path, *, sha256, cache_dir, name=None, info=None):
    """After a verified load from the pickle, keep a safetensors copy so later loads unpickle nothing."""
    target = _cache_file(cache_dir, name or Path(path).stem, sha256)
    if target.is_file():
        return
    try:
        _write_cache(model, target, sha256, info or {})
    except OSError as e:  # a read-only cache only costs speed
        logger.warning(f"warning: could not keep a safetensors copy at {target}: {e}")


def check_config(model, state, config, eval_spec=None):
    """config_new.json against the checkpoint's weights and the model (Q2L models carry `arch`)."""
    if config is None or not hasattr(model, "arch"):
        return

    problems = config_problems(config, model, checkpoint_sizes(state), eval_spec)
    if problems:
        raise UserError("config_new.json disagrees: " + "; ".join(problems))


def load_checkpoint_into(model, path, config_path=None, *, trust=False, pinned_sha256=None,
                         cache_dir=None, name=None, eval_spec=None):
    """Load checkpoint `path` into `model` (strict); return what a run record needs to know.

    config_path: the authors' config_new.json, cross-checked (never applied).
    cache_dir: where the safetensors copy lives; None keeps no copy.
    Returns {"sha256", "epoch", "best_mAP", "loaded_from"}.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; check the path or run `harness download`")
    sha = sha256_of(path)
    state, info, loaded_from = read_state(path, sha256=sha, cache_dir=cache_dir, name=name, trust=trust,
                                          pinned_sha256=pinned_sha256)
    check_config(model, state, read_config(config_path) if config_path else None, eval_spec)
    load_state_dict_strict(model, state, source=str(loaded_from))
    if cache_dir is not None and loaded_from == path:
        keep_safetensors_copy(model, path, sha256=sha, cache_dir=cache_dir, name=name, info=info)
    return {"sha256": sha, **info, "loaded_from": str(loaded_from)}


def _num(value, kind):
    """epoch / best_mAP as plain Python numbers (numpy scalars, tensors and strings alike)."""
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        return None
