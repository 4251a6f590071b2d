"""The row order of Query2Label's saved scores when their `q2l_infer.py` ran on W GPUs.

Their loader used `DistributedSampler(shuffle=False)`: the index list is padded to a multiple of W
by repeating its first images, rank r scores indices r, r + W, r + 2W, ..., and `voc_mAP` reads
the rank files one after another (rank 0 first). So the same scores reach their mAP in another
order (which reorders tied scores) and, when W does not divide the image count, with a few
images counted twice.
"""
import numpy as np
from numpy.typing import NDArray

from harness.errors import UserError

MAX_RANKS = 1024  # GPUs; the padded order grows with W (a row per rank at least): W = 10^8 never ends


def check_ranks(world_size: int) -> None:
    """One line when `world_size` is not a number of GPUs the emulation can replay."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise UserError(f"--emulate-ranks must be a whole number of GPUs, at least 1 (got {world_size!r})")
    if world_size > MAX_RANKS:
        raise UserError(f"--emulate-ranks {world_size:,} GPUs is past the limit of {MAX_RANKS:,} (their padded order "
                        f"holds at least one row per GPU); pass the number of GPUs their script ran on, e.g. 8")


def distributed_order(n_rows: int, world_size: int) -> NDArray[np.intp]:
    """Indices into the harness's rows, in the order their W rank files hold them (padding included)."""
    check_ranks(world_size)
    total = -(-n_rows // world_size) * world_size
    padded = np.arange(total) % n_rows  # the sampler repeats the list's start to fill the last round
    return np.concatenate([padded[rank::world_size] for rank in range(world_size)])


def as_ranks_wrote(scores: np.ndarray, labels: np.ndarray, world_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(scores, labels, note) as their script would have passed them to voc_mAP on `world_size` GPUs."""
    order = distributed_order(len(scores), world_size)
    repeated = len(order) - len(scores)
    note = (f"rows in the order of {world_size} DistributedSampler ranks (shuffle=False), rank files "
            f"concatenated; {repeated} padding rows repeat the first images")
    return np.asarray(scores)[order], np.asarray(labels)[order], note
