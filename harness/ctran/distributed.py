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
import torch
from torch.nn.parallel import DistributedDataParallel


def wrap(model, device, world):
    if world.size == 1:
        return model
    # torchvision's fc is kept for their keys but never used: DDP would wait forever for its gradient
    # (and skip reducing its bucket); Adam skips it either way, so freezing it changes nothing.
    model.backbone.base_network.fc.requires_grad_(False)
    if str(device).startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    return DistributedDataParallel(model)


def gather(tensors, world):
    """Concatenate each process's list of CPU tensors (same order on every process)."""
    if world.size == 1:
        return tensors
    parts = world.gather(tensors)
    return [torch.cat([p[i] for p in parts]) for i in range(len(tensors))]


def unwrap(model):
    return getattr(model, "module", model)
