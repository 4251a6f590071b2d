"""A training's run folder and the state that lets it resume after any finished epoch.

    settings.json     what defines the run (a resume must repeat it field by field)
    state.pt          after every epoch: model, EMA, optimizer, scheduler, every process's RNG states
                      (torch CPU and CUDA, Python, numpy), the next epoch (the sampler's), the selection
                      bookkeeping, the history; written whole or not at all
    best.safetensors  the selected weights (regular or EMA, as their checkpoint saved), with the arch
    selection_scores.npy, selection_rows.npy   the best epoch's scores on the selection images
    scores.npy, labels.npy, image_ids.npy, record.json   at the end (record.json last)
Their GradScaler is re-created every epoch, so no scaler state outlives an epoch: none is kept.
"""
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from harness.records.training_state import check_epoch, read_state, restoring

STATE, BEST = "state.pt", "best.safetensors"
SELECTION_SCORES, SELECTION_ROWS = "selection_scores.npy", "selection_rows.npy"
FORMAT = "q2l trained state dict"


def rng_states():
    """This process's random states as tensors and numbers (so state.pt loads with weights_only):
    torch (CPU and every CUDA device), Python's `random`, numpy's global generator."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                      "has_gauss": has_gauss, "cached": cached}}


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    py = states["python"]
    random.setstate((py["version"], tuple(py["words"].tolist()), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))


def save_state(run_dir, parts, progress, rng_by_rank):
    """state.pt after an epoch (rank 0; `rng_by_rank`: every process's rng_states())."""
    tmp = Path(run_dir) / (STATE + ".tmp")
    torch.save({"model": parts.model.state_dict(), "ema": parts.ema.module.state_dict(),
                "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
                "rng": rng_by_rank, "progress": json.dumps(progress)}, tmp)
    tmp.replace(Path(run_dir) / STATE)  # whole or absent


PROGRESS_KEYS = ("epoch", "selection", "history", "stopped", "wall_s", "gpu_s", "peak", "skipped_steps")


def load_state(run_dir, parts, rank):
    """Restore everything after the last finished epoch; returns the progress dict. A state.pt that is
    damaged, needs code to unpickle, or is of another run's shape is one line naming it."""
    path = Path(run_dir) / STATE
    fix = f"delete {run_dir} to start over, or run without --resume for a new run"
    saved = read_state(path, ("model", "ema", "optimizer", "scheduler", "rng", "progress"), fix)
    with restoring(path, fix):
        progress = json.loads(saved["progress"])
        missing = [k for k in PROGRESS_KEYS if k not in progress]
        if missing:
            raise KeyError(f"its progress has no {missing[0]!r}")
        check_epoch(path, progress["epoch"], fix)
        parts.model.load_state_dict(saved["model"])
        parts.ema.module.load_state_dict(saved["ema"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.scheduler.load_state_dict(saved["scheduler"])
        set_rng_states(saved["rng"][rank])
    return progress


def save_weights(path, module, arch, meta):
    """Trained weights as safetensors, the architecture and `meta` in its metadata; whole or absent."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    save_file(state, tmp, metadata={"format": FORMAT, "arch": json.dumps(arch),
                                    **{k: json.dumps(v) for k, v in meta.items()}})
    tmp.replace(path)


def save_array(path, array):
    tmp = Path(path).with_name(Path(path).name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
