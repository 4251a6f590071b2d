"""Two gloo processes (torchrun's environment) train as one process on the global batch: their
DistributedSampler splits each global batch between the ranks, DDP averages the per-rank mean losses'
gradients, so the two agree up to the order of float sums (dropout and Swin's DropPath off here: the ranks
draw their own masks, one process draws others). Rank 0 alone writes the run. The --smoke Swin: no layer of
it sees the batch (LayerNorm only, as ResNet-101's FrozenBatchNorm), at a quarter of ResNet-101's CPU time.

Bounds, measured on this test's run (2 epochs of 2 steps of 4 images, 2 a process, tiny Swin): the final
val2014 scores differ by at most 1.2e-7, the val losses by 5e-8 relative, the weights by 1.2e-6 in relative
L2 norm (tiny R101, batches of 8 of the smoke subset's full-size photos: 3e-7, 5e-6, 1.7e-5). The weights
are compared in norm, not element by element: the gradient of attention's key bias is zero in exact
arithmetic (softmax ignores a constant), so AdamW turns its rounding noise into steps of +-lr whose signs
follow the summation order; the scores do not depend on that bias.
Rank 1 training on rank 0's images instead moves the val losses by 3.8e-2 relative, the scores by 8.4e-2
and the weights by 1.7e-4 in relative L2 norm (measured): caught."""
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from q2l_train_helpers import SWIN, smoke_config, tiny_coco, without_drop_path

from harness.eval.ranks import distributed_order
from harness.q2l.run import fit

NO_DROPOUT = {"dropout": 0.0}
BATCH = 4  # 8 train images: 2 steps an epoch, each split over the 2 processes


def _worker(rank, port, coco, runs):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    finished = fit(smoke_config(coco, runs, model_id=SWIN, recipe_changes=NO_DROPOUT, batch_size=BATCH))
    assert (finished.record is None) == (rank != 0)
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_equal_one_process_on_the_global_batch(tmp_path, monkeypatch):
    without_drop_path(monkeypatch)  # in the forked ranks too
    coco = tiny_coco(tmp_path / "coco", n_train=8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(port, str(coco), str(tmp_path / "two")), nprocs=2, join=True,
                       start_method="fork")
    fit(smoke_config(coco, tmp_path / "one", model_id=SWIN, recipe_changes=NO_DROPOUT, batch_size=BATCH))
    (two,), (one,) = ((tmp_path / r / SWIN).iterdir() for r in ("two", "one"))
    a, b = (torch.load(d / "state.pt", weights_only=True) for d in (one, two))
    wa, wb = (torch.cat([v.flatten() for v in s["model"].values() if v.is_floating_point()]) for s in (a, b))
    assert not torch.equal(wa, wb), "bit-equal: the test could not tell the two runs apart"
    assert float((wa - wb).norm() / wa.norm()) < 1e-4
    sa, sb = (np.load(d / "scores.npy") for d in (one, two))
    assert float(np.abs(sa - sb).max()) < 1e-5
    ra, rb = (json.loads((d / "record.json").read_text()) for d in (one, two))
    for ha, hb in zip(ra["train"]["history"], rb["train"]["history"], strict=True):
        assert ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-4)
        assert ha["val_loss_ema"] == pytest.approx(hb["val_loss_ema"], rel=1e-4)
    assert rb["distributed"]["world_size"] == 2 and ra["distributed"]["world_size"] == 1
    # validation rows in their rank-file order (padding included), as the evaluation emulates it
    rows = np.load(two / "selection_rows.npy")
    assert np.array_equal(rows, distributed_order(rb["train"]["n_select"], 2))
