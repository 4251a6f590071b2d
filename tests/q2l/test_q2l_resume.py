"""A training killed with SIGKILL mid-epoch and resumed equals the uninterrupted run, bit for bit (CPU):
weights, EMA, AdamW state, every epoch's losses and mAPs, the final scores. The killed and the resumed run
are each a process of their own, forked from this one (forked_cli.py: its imports are this process's, its
random states a fresh interpreter's), so the resumed run knows only what the killed one left on disk. The
small --smoke TResNet-L (q2l_train_helpers.SMALL): its ABN statistics are state a resume must restore too.
Both tests compare with one uninterrupted run, made once in this process (`harness q2l train --smoke
--batch-size 4` is its config: the authors' augmentation, no loader worker, 2 epochs). 8 train and 4 val
images, 2 steps an epoch: a resume restores the same state whatever the number of images."""
import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import forked_cli
import numpy as np
import pytest
import torch
from q2l_train_helpers import SMALL, smoke_config, tiny_coco

import harness.commands.q2l  # noqa: F401  (imported once here, not again in each forked run)
from harness.errors import Interrupted
from harness.q2l import train
from harness.q2l.run import fit

EPOCHS, BATCH = "2", "4"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run here on one thread, as the forked ones are (float sums in one order), whatever pytest's -n."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def whole(one_thread, tmp_path_factory):
    """The uninterrupted run (2 steps an epoch), only read by the tests."""
    coco = tiny_coco(tmp_path_factory.mktemp("q2l-resume-coco"), n_val=4, n_train=8)
    config = smoke_config(coco, tmp_path_factory.mktemp("q2l-whole"), model_id=SMALL, augment="authors",
                          batch_size=int(BATCH))
    return config, fit(config).run_dir


def _command(coco, runs, *extra):
    return ["q2l", "train", SMALL, "--coco-root", str(coco), "--smoke",
            "--epochs", EPOCHS, "--batch-size", BATCH, "--runs", str(runs), "--no-progress", *extra]


def _run(command):
    code, out = forked_cli.run(command)
    assert code == 0, out


def _run_dir(runs):
    (run_dir,) = (Path(runs) / SMALL).iterdir()
    return run_dir


def _kill_after_first_epoch(command):
    """Start the training, SIGKILL it once its first epoch is saved (it is then inside the second)."""
    pid, stdout = forked_cli.start(command)
    try:
        for line in stdout:
            if line.startswith("epoch 1/"):  # printed after state.pt holds the first epoch (0 in the record)
                os.kill(pid, signal.SIGKILL)
                break
    finally:
        code, _ = forked_cli.wait(pid, stdout)
    return code


def test_resume_after_sigkill_equals_the_uninterrupted_run(whole, tmp_path):
    config, whole = whole
    coco = config.coco_root
    assert _kill_after_first_epoch(_command(coco, tmp_path / "cut")) == -signal.SIGKILL
    cut = _run_dir(tmp_path / "cut")
    assert not (cut / "record.json").exists()
    assert json.loads(torch.load(cut / "state.pt", weights_only=True)["progress"])["epoch"] == 1
    _run(_command(coco, tmp_path / "cut", "--resume"))

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


def test_resume_after_an_interruption_inside_an_epoch_equals_the_uninterrupted_run(whole, tmp_path, monkeypatch):
    """Ctrl-C after the first of two steps of the second epoch (that step's update is lost with the process's
    memory), resumed with 2 loader workers and their augmentation: the same bits as one uninterrupted run."""
    config, whole = whole
    real = train.train_epoch

    def interrupted(parts, loader, epoch, on_batch=None):
        def stop(_images):
            if epoch == 1:
                raise KeyboardInterrupt
        return real(parts, loader, epoch, stop)

    monkeypatch.setattr(train, "train_epoch", interrupted)
    cut = replace(config, runs_root=str(tmp_path / "cut"))
    with pytest.raises(Interrupted):
        fit(cut)
    monkeypatch.setattr(train, "train_epoch", real)
    (run_dir,) = (tmp_path / "cut" / SMALL).iterdir()
    resumed = fit(replace(cut, resume=str(run_dir), workers=2))
    a, b = (torch.load(d / "state.pt", weights_only=True) for d in (whole, resumed.run_dir))
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][i][k]))
                   for k, v in state.items())
    assert json.loads(a["progress"])["history"] == [
        {**h, "wall_s": w["wall_s"], "images_per_s": w["images_per_s"]}
        for h, w in zip(json.loads(b["progress"])["history"], json.loads(a["progress"])["history"], strict=True)]
