"""From a release to a loaded model, in one straight line.

resolve the files (given, hand-placed, cached or downloaded; verified) -> read the checkpoint
once, safely -> sizes from its state dict (Q2L) -> build -> strict load, finite weights ->
lock an unpinned release's hash (only now) -> provenance for the run record.
The mechanism (safe unpickling, strict-load diagnosis, the safetensors copy) is harness.checkpoints;
the model family's key logic sits beside its model (harness.models.q2l).
"""
import logging
from pathlib import Path

import torch

from harness.checkpoints import (
    check_config,
    keep_safetensors_copy,
    load_state_dict_strict,
    read_config,
    read_state,
    sha256_of,
)
from harness.download import fetch
from harness.download.lock import lock_entry
from harness.download.settings import harness_home, lock_file_for
from harness.download.weights import lock_verified
from harness.errors import UserError
from harness.inputs.paths import check_input_file
from harness.models import build_from_arch
from harness.models.q2l import SIZES_FROM_CHECKPOINT, checkpoint_sizes

logger = logging.getLogger(__name__)


def build_pretrained(spec, path=None, config=None, *, weights_dir=None, cache_dir=None, trust=False,
                     **arch_overrides):
    """Build manifest entry `spec` and load its weights strictly; returns (model, record info).

    The Q2L transformer's feed-forward size and layer counts are taken from the checkpoint (the
    manifest's are assumptions until pinned); any difference is said and recorded.
    """
    given = path is not None  # else the download layer checked it against the pinned or locked sha256
    fetched = [] if given else [role for role, asked in (("checkpoint", path), ("config", config))
                                if asked is None and role in spec.files]
    path, config = release_files(spec, path, config, weights_dir=weights_dir, cache_dir=cache_dir)
    pinned_sha = spec.files["checkpoint"].sha256 if "checkpoint" in spec.files else None
    sha = sha256_of(path, fetched=not given)
    cache = dict(sha256=sha, cache_dir=harness_home(cache_dir) / "safetensors", name=spec.id)
    state, meta, loaded_from = read_state(path, trust=trust, pinned_sha256=pinned_sha, **cache)

    from_checkpoint = {}
    if spec.family == "q2l":
        sizes = checkpoint_sizes(state)
        from_checkpoint = {k: sizes[k] for k in SIZES_FROM_CHECKPOINT if k in sizes and sizes[k] != spec.arch.get(k)}
        if from_checkpoint:
            logger.warning(f"{spec.id}: the checkpoint has {from_checkpoint} (the manifest assumed "
                        f"{ {k: spec.arch.get(k) for k in from_checkpoint} }); built with the checkpoint's sizes")
    model = build_from_arch(spec.arch, **{**arch_overrides, **from_checkpoint})
    check_config(model, state, read_config(config) if config else None, spec.eval)
    load_state_dict_strict(model, state, source=str(loaded_from))
    _check_finite(spec, model, path)
    if loaded_from == path:
        keep_safetensors_copy(model, path, info=meta, **cache)
    _lock_release(spec, {"checkpoint": path, "config": config}, fetched)
    info = {"path": str(path), "config": str(config) if config else None, "sha256": sha,
            "pinned": pinned_sha is not None and sha == pinned_sha, "random_weights": False,
            "epoch": meta.get("epoch"), "best_mAP": meta.get("best_mAP"), "loaded_from": str(loaded_from),
            "arch_from_checkpoint": from_checkpoint, "unverified": unverified_reason(spec, sha) if given else None}
    return model, info


def release_files(spec, path=None, config=None, *, weights_dir=None, cache_dir=None):
    """(checkpoint, config or None): the given file, else the verified release (hand-placed, cache,
    download); a Q2L checkpoint's config_new.json is also looked for beside it."""
    if path is None:
        if not spec.released:
            raise UserError(f"{spec.id} has no released weights (trained here): run `harness mlspl train`, "
                            f"or pass --weights FILE")
        path = fetch(spec, "checkpoint", cache_dir=cache_dir, weights_dir=weights_dir, lock=False)
        if config is None and "config" in spec.files:
            config = fetch(spec, "config", cache_dir=cache_dir, weights_dir=weights_dir, lock=False)
    else:
        check_weights_file(path)
    sibling = Path(path).with_name("config_new.json")
    if config is None and spec.family == "q2l" and sibling.is_file():
        config = sibling
    return Path(path), config


def check_weights_file(path):
    """`--weights PATH` names a readable checkpoint file, or one line saying what it is instead."""
    if Path(path).is_dir():
        raise UserError(f"--weights {path} is a folder; pass the checkpoint file in it (--weights "
                        f"{Path(path) / 'checkpoint.pkl'}), or the folder of hand-placed releases with --weights-dir {path}")
    check_input_file(path, "--weights", "pass a checkpoint file (or 'random'), or leave --weights out to use the "
                                        "verified release")


def unverified_reason(spec, sha256):
    """Why a checkpoint given by path cannot count as the release of `spec` (None when its sha256
    is the pinned or locked one, or when `spec` has no release: trained here, nothing to match)."""
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
