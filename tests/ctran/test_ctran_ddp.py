"""DDP (gloo, CPU, 2 processes) gives the gradients of one process on the same global batch."""
import os
import socket

import torch
import torch.multiprocessing as mp

from harness.ctran import distributed
from harness.ctran.run import train_step
from harness.distributed import World
from harness.models.ctran import CTran


def _batch():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 64, 64, generator=g)
    labels = (torch.rand(4, 80, generator=g) < 0.2).float()
    mask = torch.where(torch.rand(4, 80, generator=g) < 0.3, labels, torch.full_like(labels, -1))
    return images, labels, mask


def _model():
    torch.manual_seed(0)
    return CTran(layers=1, blocks=(1, 1, 1, 1), block="basic").eval()  # eval: BatchNorm statistics are fixed


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _worker(rank, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    world = World.from_env("cpu")
    model = _model()
    net = distributed.wrap(model, "cpu", world)
    images, labels, mask = (t[2 * world.rank: 2 * world.rank + 2] for t in _batch())
    train_step(net, torch.optim.SGD(model.parameters(), lr=0.0), images, labels, mask, True, world.size)
    if world.main:
        torch.save(_grads(model), out)
    torch.distributed.destroy_process_group()


def test_ddp_gradients_equal_one_process_on_the_global_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers start from this process's imports instead of loading torch again; each sets
    # one thread before any op (as DataLoader workers do)
    mp.start_processes(_worker, args=(port, str(tmp_path / "ddp.pt")), nprocs=2, join=True, start_method="fork")
    model = _model()
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), *_batch(), True, 1)
    one, ddp = _grads(model), torch.load(tmp_path / "ddp.pt")
    assert one.keys() == ddp.keys() and len(one) > 10
    worst = max(float((one[k] - ddp[k]).abs().max() / (one[k].abs().max() + 1e-12)) for k in one)
    print("max relative gradient difference", worst)
    assert worst < 1e-4, worst
    assert any(float(v.abs().max()) > 0 for v in one.values())
