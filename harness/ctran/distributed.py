"""Training on several processes with torch.distributed (torchrun): DDP, one shard of each batch per process.

    torchrun --nproc_per_node 4 -m harness ctran train --coco-root data/coco     # global batch stays 16

The global batch (--batch-size) is split evenly across processes. Their loss is a SUM over the
batch's unknown entries, and DDP averages gradients across processes, so each process scales its
loss by the world size: the gradient equals one process's on the whole global batch
(tests/ctran/test_ctran_ddp.py checks it on CPU, gloo, 2 processes). On GPUs BatchNorm becomes
SyncBatchNorm, so batch statistics are those of the global batch as on one GPU (their DataParallel
computed them per GPU; CPU has no SyncBatchNorm). Label masks are keyed by image row, so every
process draws the same mask for an image; crops and flips are seeded per (seed, epoch, rank).
Validation is sharded too and gathered; only rank 0 writes files.
"""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def world():
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(device):
    """Join the process group when started by torchrun; returns (rank, world size, device)."""
    rank, size, local = world()
    if size == 1:
        return 0, 1, device
    if device == "cuda":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, size, device


def wrap(model, device, size):
    if size == 1:
        return model
    # torchvision's fc is kept for their keys but never used: DDP would wait forever for its gradient
    # (and skip reducing its bucket); Adam skips it either way, so freezing it changes nothing.
    model.backbone.base_network.fc.requires_grad_(False)
    if str(device).startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[torch.device(device).index])
    return DistributedDataParallel(model)


def gather(tensors, size):
    """Concatenate each process's list of CPU tensors (same order on every process)."""
    if size == 1:
        return tensors
    parts = [None] * size
    dist.all_gather_object(parts, tensors)
    return [torch.cat([p[i] for p in parts]) for i in range(len(tensors))]


def unwrap(model):
    return getattr(model, "module", model)
