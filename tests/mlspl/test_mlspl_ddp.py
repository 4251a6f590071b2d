"""MLSPL fine-tuning on 2 processes (gloo, CPU) takes the update of one process on the same global
batch: after two ROLE steps (EPR's batch-mean term included) the gradients, weights, label
estimates and val mAP agree. Not bit for bit: each rank sums its share's gradient, then the ranks'
sums are added (one all_reduce), a different order of float additions than one process's."""
import os
import socket

import torch
import torch.multiprocessing as mp
from tiny_convnet import TinyConvNet

from harness.distributed import World
from harness.mlspl.config import TrainConfig
from harness.mlspl.prepare import load_prepared
from harness.mlspl.train import train_fine_tuned

GLOBAL_BATCH = 4


def _train(smoke_root, data_dir, world):
    torch.manual_seed(0)
    model = TinyConvNet(80, width=8, pool=16)  # 8 x 16 x 16 = 2048 features, as ResNet-50's, no BatchNorm
    config = TrainConfig("ROLE", "fine-tuned", coco_root=smoke_root, epochs=1, resolution=32, workers=0, seed=0,
                         max_steps=2)
    result = train_fine_tuned(model, load_prepared(data_dir), config, (GLOBAL_BATCH, 1e-3), world=world)
    return {"grads": {k: p.grad.clone() for k, p in model.named_parameters()},
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "table": result.table, "val_mAP": result.val_map, "rows_scored": result.test_scores.shape[0]}


def _worker(rank, port, smoke_root, data_dir, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World.from_env("cpu")
    torch.save(_train(smoke_root, data_dir, world), f"{out}.rank{rank}")
    torch.distributed.destroy_process_group()


def test_two_processes_take_the_one_process_update_of_the_global_batch(smoke_root, smoke_data, tmp_path):  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    # the one-process run first: the ResNet-50 its start draws (only to move the generator, as theirs) is
    # then built once and the forked ranks copy it (resnet_cache.py) instead of building it again each
    one = _train(smoke_root, smoke_data, World())
    # fork: the children reuse the imports (spawn would spend seconds importing torch again)
    mp.start_processes(_worker, args=(port, smoke_root, smoke_data, out), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(f"{out}.rank{rank}") for rank in (0, 1)]
    worst = max(float((r["grads"][k] - g).abs().max() / g.abs().max()) for r in ranks for k, g in one["grads"].items())
    print("largest gradient difference / largest gradient entry, per tensor:", worst)
    for name in one["grads"]:  # each rank holds the summed gradient of the whole batch
        assert float(one["grads"][name].abs().max()) > 0
        for ddp in ranks:
            torch.testing.assert_close(ddp["grads"][name], one["grads"][name], rtol=1e-4, atol=1e-7)
    for ddp in ranks:
        for name, weight in one["weights"].items():
            torch.testing.assert_close(ddp["weights"][name], weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ddp["table"], one["table"], rtol=1e-5, atol=1e-6)
        assert ddp["rows_scored"] == one["rows_scored"] == 2 * GLOBAL_BATCH  # the two ranks' shards, gathered
        assert abs(ddp["val_mAP"] - one["val_mAP"]) < 1e-6
    assert all(torch.equal(ranks[0]["weights"][k], ranks[1]["weights"][k]) for k in one["weights"])  # in step
