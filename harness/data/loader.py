"""The DataLoader of every evaluation and training: uint8 batches, pinned memory on CUDA.

Workers default to the cores this process may run on (`os.sched_getaffinity`, which honours
taskset, cgroups cpusets and torchrun's binding), are kept between passes (persistent) and each
keeps `PREFETCH` batches ready. Order is the dataset's (no shuffle), so rows never move, unless a
sampler is given (MLSPL's replay of the authors' shuffle).

A `generator` means the caller replays another script's random draws: every pass then makes a
fresh iterator, as the authors' non-persistent DataLoader did, which draws its workers' base seed
from `generator` and reseeds them. Persistent workers would draw it once and carry their random
state across passes, so they are off then; the batch order and each batch's worker (round robin)
do not depend on the prefetch depth.
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


def make_loader(dataset, batch_size, device, workers=None, *, batch_sampler=None, generator=None):
    """batch_sampler: yields each batch's indices (then batch_size is ignored); generator: see above."""
    workers = usable_cores() if workers is None else workers
    extra = dict(prefetch_factor=PREFETCH, persistent_workers=generator is None) if workers > 0 else {}
    batching = dict(batch_sampler=batch_sampler) if batch_sampler is not None else dict(batch_size=batch_size)
    return torch.utils.data.DataLoader(dataset, num_workers=workers, generator=generator,
                                       pin_memory=torch.device(device).type == "cuda", collate_fn=collate,
                                       **batching, **extra)
