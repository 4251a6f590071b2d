"""A training killed with SIGKILL mid-epoch and resumed equals the uninterrupted run, bit for bit (CPU):
weights, EMA, AdamW state, every epoch's losses and mAPs, the final scores."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from q2l_train_helpers import tiny_coco

EPOCHS = "2"


def _command(coco, runs, *extra):
    return [sys.executable, "-m", "harness", "q2l", "train", "q2l-r101-448", "--coco-root", str(coco), "--smoke",
            "--epochs", EPOCHS, "--runs", str(runs), "--no-progress", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}


def _run_dir(runs):
    (run_dir,) = (Path(runs) / "q2l-r101-448").iterdir()
    return run_dir


def _kill_after_first_epoch(command):
    """Start the training, SIGKILL it once its first epoch is saved (it is then inside the second)."""
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/"):  # printed after state.pt holds the first epoch (0 in the record)
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait()
    return proc.returncode


def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path):
    coco = tiny_coco(tmp_path / "coco", n_train=8)  # one step an epoch
    subprocess.run(_command(coco, tmp_path / "whole"), env=_env(), check=True, capture_output=True)
    assert _kill_after_first_epoch(_command(coco, tmp_path / "cut")) == -signal.SIGKILL
    cut = _run_dir(tmp_path / "cut")
    assert not (cut / "record.json").exists()
    assert json.loads(torch.load(cut / "state.pt", weights_only=True)["progress"])["epoch"] == 1
    subprocess.run(_command(coco, tmp_path / "cut", "--resume"), env=_env(), check=True, capture_output=True)

    whole = _run_dir(tmp_path / "whole")
    a, b = (torch.load(d / "state.pt", weights_only=True) for d in (whole, cut))
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][i][k]))
                   for k, v in state.items())
    figures = ("train_loss", "val_loss", "val_loss_ema", "mAP", "mAP_ema", "lr_end", "best")
    ha, hb = (json.loads((d / "record.json").read_text())["train"]["history"] for d in (whole, cut))
    assert [{k: h[k] for k in figures} for h in ha] == [{k: h[k] for k in figures} for h in hb]
    assert np.array_equal(np.load(whole / "scores.npy"), np.load(cut / "scores.npy"))
