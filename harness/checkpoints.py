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
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from harness.errors import UserError

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
    from harness.download.verify import file_digest, read_record, unchanged_since

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


# ---------------------------------------------------------------- Q2L architecture checks

def q2l_sizes(state_dict):
    """Sizes a Q2L state dict fixes: hidden_dim, dim_feedforward, layer counts, classes, grid."""
    def count(part):
        prefix = f"transformer.{part}.layers."
        found = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
        return max(found) + 1 if found else 0

    sizes = {"enc_layers": count("encoder"), "dec_layers": count("decoder")}
    for key in ("transformer.decoder.layers.0.linear1.weight", "transformer.encoder.layers.0.linear1.weight"):
        if key in state_dict:
            sizes["dim_feedforward"] = state_dict[key].shape[0]
            break
    if "query_embed.weight" in state_dict:
        sizes["num_class"], sizes["hidden_dim"] = state_dict["query_embed.weight"].shape
    if "backbone.1.pe" in state_dict:
        sizes["grid"] = tuple(state_dict["backbone.1.pe"].shape[-2:])
    return sizes


def _same(value, expected):
    if isinstance(expected, bool):
        return value is expected
    if isinstance(expected, int):
        try:
            return int(value) == expected
        except (TypeError, ValueError):
            return False
    return value == expected


def check_q2l_config(config, model, ckpt_sizes, eval_spec=None):
    """Problems between config_new.json, the checkpoint's weights and the model built here."""
    problems = []
    for key, value in sorted(ckpt_sizes.items()):
        if key in config and key != "grid" and not _same(config[key], value):
            problems.append(f"config says {key}={config[key]} but the checkpoint's weights have {value} "
                            f"(the two files do not belong together)")
    for key, value in model.arch.items():
        if key in config and not _same(config[key], value):
            problems.append(f"config says {key}={config[key]} but the model is built with {value} "
                            f"(fix arch.{key} in the manifest)")
    for flag in ("keep_other_self_attn_dec", "keep_first_self_attn_dec", "keep_input_proj"):
        if config.get(flag) is True:
            problems.append(f"config sets {flag}, which the released-model architecture here does not have")
    if config.get("position_embedding", "sine") not in ("sine", "v2"):
        problems.append(f"config uses position_embedding={config['position_embedding']}; only 'sine' is built here")
    if eval_spec is not None:
        if "orid_norm" in config and config["orid_norm"] != (eval_spec.normalize == "none"):
            problems.append(f"config says orid_norm={config['orid_norm']} but the manifest's eval.normalize "
                            f"is {eval_spec.normalize}")
        if "img_size" in config and not _same(config["img_size"], eval_spec.resolution):
            problems.append(f"config says img_size={config['img_size']} but the manifest's eval.resolution "
                            f"is {eval_spec.resolution}")
    return problems


# ---------------------------------------------------------------- strict loading

def _likely_cause(model, model_sd, ckpt_sd, wrong):
    odd = wrong + [k for k in model_sd if k not in ckpt_sd] + [k for k in ckpt_sd if k not in model_sd]
    if sum(k.startswith("backbone.0.") for k in odd) > len(odd) // 2:
        return "likely cause: wrong model: this checkpoint is for another backbone or architecture"
    got, want = q2l_sizes(ckpt_sd), q2l_sizes(model_sd)
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
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"source_sha256": sha, **{k: str(v) for k, v in info.items() if v is not None}}
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, target)


# ---------------------------------------------------------------- entry points

SIZES_FROM_CHECKPOINT = ("dim_feedforward", "enc_layers", "dec_layers")


def checkpoint_q2l_sizes(path, *, trust=False, pinned_sha256=None, cache_dir=None, name=None, sha256=None):
    """q2l_sizes of a checkpoint file, from its safetensors copy when one exists (nothing unpickled)."""
    sha = sha256 or sha256_of(path)
    cached = _cache_file(cache_dir, name or Path(path).stem, sha) if cache_dir else None
    if cached is not None and cached.is_file():
        from safetensors import safe_open

        with safe_open(str(cached), "pt") as f:
            shapes = {k: _Shape(f.get_slice(k).get_shape()) for k in f.keys()}
        return q2l_sizes(shapes)
    return q2l_sizes(find_state_dict(read_pickle(path, trust=trust, pinned_sha256=pinned_sha256)))


class _Shape:
    """Stands in for a tensor where only its shape is read."""

    def __init__(self, shape):
        self.shape = tuple(shape)

def load_checkpoint_into(model, path, config_path=None, *, trust=False, pinned_sha256=None,
                         cache_dir=None, name=None, eval_spec=None, sha256=None):
    """Load checkpoint `path` into `model` (strict); return what a run record needs to know.

    config_path: the authors' config_new.json, cross-checked (never applied).
    cache_dir: where the safetensors copy lives; None keeps no copy.
    Returns {"sha256", "epoch", "best_mAP", "loaded_from"}.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; check the path or run `harness download`")
    sha = sha256 or sha256_of(path)
    config = read_config(config_path) if config_path else None
    cached = _cache_file(cache_dir, name or path.stem, sha) if cache_dir else None
    if cached is not None and cached.is_file():
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(cached), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("source_sha256") == sha:
            state = load_file(str(cached))
            _check_config(model, state, config, eval_spec)
            load_state_dict_strict(model, state, source=str(cached))
            return {"sha256": sha, "epoch": _num(meta.get("epoch"), int),
                    "best_mAP": _num(meta.get("best_mAP"), float), "loaded_from": str(cached)}
    obj = read_pickle(path, trust=trust, pinned_sha256=pinned_sha256)
    state = find_state_dict(obj)
    _check_config(model, state, config, eval_spec)
    load_state_dict_strict(model, state, source=str(path))
    meta = obj if isinstance(obj, dict) else {}
    info = {"epoch": _num(meta.get("epoch"), int), "best_mAP": _num(meta.get("best_mAP"), float)}
    if cached is not None:
        try:
            _write_cache(model, cached, sha, info)
        except OSError as e:  # a read-only cache only costs speed
            print(f"warning: could not keep a safetensors copy at {cached}: {e}", file=sys.stderr)
    return {"sha256": sha, **info, "loaded_from": str(path)}


def _num(value, kind):
    """epoch / best_mAP as plain Python numbers (numpy scalars, tensors and strings alike)."""
    try:
        return kind(float(value))
    except (TypeError, ValueError):
        return None


def _check_config(model, state, config, eval_spec):
    if config is None or not hasattr(model, "arch"):
        return
    problems = check_q2l_config(config, model, q2l_sizes(state), eval_spec)
    if problems:
        raise UserError("config_new.json disagrees: " + "; ".join(problems))


def release_files(spec, path=None, config=None, *, weights_dir=None, cache_dir=None):
    """(checkpoint, config or None): the given file, else the verified release (hand-placed, cache,
    download); a Q2L checkpoint's config_new.json is also looked for beside it."""
    from harness.download import fetch

    if path is None:
        if not spec.released:
            raise UserError(f"{spec.id} has no released weights (trained here): run `harness mlspl train`, "
                            f"or pass --weights FILE")
        path = fetch(spec, "checkpoint", cache_dir=cache_dir, weights_dir=weights_dir, lock=False)
        if config is None and "config" in spec.files:
            config = fetch(spec, "config", cache_dir=cache_dir, weights_dir=weights_dir, lock=False)
    elif not Path(path).is_file():
        raise UserError(f"--weights {path}: no such file; pass a checkpoint file (or 'random'), or leave "
                        f"--weights out to use the verified release")
    sibling = Path(path).with_name("config_new.json")
    if config is None and spec.family == "q2l" and sibling.is_file():
        config = sibling
    return Path(path), config


def unverified_reason(spec, sha256):
    """Why a checkpoint given by path cannot count as the release of `spec` (None when its sha256
    is the pinned or locked one, or when `spec` has no release: trained here, nothing to match)."""
    from harness.download.lock import lock_entry
    from harness.download.settings import lock_file_for

    if not spec.released or "checkpoint" not in spec.files:
        return None
    expected = spec.files["checkpoint"].sha256 or (
        lock_entry(lock_file_for(spec.manifest_path), spec.id, "checkpoint") or {}).get("sha256")
    if expected is None:
        return ("weights given by path, not verified as the release (no pinned or locked sha256; "
                "pass the folder with --weights-dir to check and lock it)")
    if sha256 != expected:
        return f"weights given by path are not the released file (sha256 {sha256[:12]}, release {expected[:12]})"
    return None


def _lock_release(spec, paths, roles):
    """Only a release that has just loaded strictly into its model may have its hash locked."""
    from harness.download.weights import lock_verified

    for role in roles:
        lock_verified(spec, role, paths[role])


def _check_finite(spec, model, path):
    """NaN or inf weights would only show as NaN scores after a batch: refuse them at load time."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    fix = (f"get the release again: `harness download {spec.id} --verify`" if spec.released else
           "it was saved from a diverged training: train it again (another learning rate) or use an earlier checkpoint")
    raise UserError(f"{path} holds NaN or inf values in {len(bad)} tensor(s) (first: {bad[0]}); {fix}")


def build_pretrained(spec, path=None, config=None, *, weights_dir=None, cache_dir=None, trust=False,
                     **arch_overrides):
    """Build manifest entry `spec` and load its weights strictly; returns (model, record info).

    The Q2L transformer's feed-forward size and layer counts are taken from the checkpoint (the
    manifest's are assumptions until pinned); any difference is said and recorded.
    """
    from harness.download.settings import harness_home
    from harness.models import build_from_arch

    given = path is not None  # else the download layer checked it against the pinned or locked sha256
    fetched = [] if given else [role for role, asked in (("checkpoint", path), ("config", config))
                                if asked is None and role in spec.files]
    path, config = release_files(spec, path, config, weights_dir=weights_dir, cache_dir=cache_dir)
    pinned_sha = spec.files["checkpoint"].sha256 if "checkpoint" in spec.files else None
    options = dict(trust=trust, pinned_sha256=pinned_sha, cache_dir=harness_home(cache_dir) / "safetensors",
                   name=spec.id, sha256=sha256_of(path, fetched=not given))
    from_checkpoint = {}
    if spec.family == "q2l":
        sizes = checkpoint_q2l_sizes(path, **options)
        from_checkpoint = {k: sizes[k] for k in SIZES_FROM_CHECKPOINT if k in sizes and sizes[k] != spec.arch.get(k)}
        if from_checkpoint:
            print(f"{spec.id}: the checkpoint has {from_checkpoint} (the manifest assumed "
                  f"{ {k: spec.arch.get(k) for k in from_checkpoint} }); built with the checkpoint's sizes",
                  file=sys.stderr)
    model = build_from_arch(spec.arch, **{**arch_overrides, **from_checkpoint})
    loaded = load_checkpoint_into(model, path, config, eval_spec=spec.eval, **options)
    _check_finite(spec, model, path)
    _lock_release(spec, {"checkpoint": path, "config": config}, fetched)
    info = {"path": str(path), "config": str(config) if config else None, "sha256": loaded["sha256"],
            "pinned": pinned_sha is not None and loaded["sha256"] == pinned_sha, "random_weights": False,
            "epoch": loaded.get("epoch"), "best_mAP": loaded.get("best_mAP"),
            "loaded_from": loaded.get("loaded_from"), "arch_from_checkpoint": from_checkpoint,
            "unverified": unverified_reason(spec, loaded["sha256"]) if given else None}
    return model, info
