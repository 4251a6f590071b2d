"""The DataLoader of every evaluation: uint8 batches, every usable core, pinned memory on CUDA.

Workers default to the cores this process may run on (`os.sched_getaffinity`, which honours
taskset, cgroups cpusets and torchrun's binding), are kept between passes (persistent) and each
keeps `PREFETCH` batches ready. Order is the dataset's (no shuffle), so rows never move.
"""
import os

import torch

from harness.data.dataset import collate

PREFETCH = 4  # batches per worker: enough to hide a slow JPEG without holding much memory


def usable_cores():
    """The cores this process may use, shared with the other ranks torchrun started on this machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def make_loader(dataset, batch_size, device, workers=None):
    workers = usable_cores() if workers is None else workers
    extra = dict(persistent_workers=True, prefetch_factor=PREFETCH) if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       pin_memory=torch.device(device).type == "cuda", collate_fn=collate, **extra)
