"""Several processes (torchrun), one run: each rank scores a contiguous shard of the rows.

    torchrun --nproc_per_node 4 -m harness eval MODEL --coco-root DIR

A shard is a whole number of the model's batches, so every batch holds the very rows it holds in
one process and the scores are the same bits. Each rank writes its own partial scores and
progress in the shared run folder (and resumes from them); rank 0 merges them in row order,
computes the metrics and writes the record, naming every rank's device. A rank that fails makes
every rank stop with the same one line. Without torchrun (WORLD_SIZE unset or 1) nothing changes.
"""
import os
import socket

import torch
import torch.distributed as dist

from harness.errors import UserError


def _env_int(name, default):
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name}={text!r} is not a whole number; torchrun sets it: unset it to run one process")


def pick_device(requested=None):
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return requested


class World:
    def __init__(self, rank=0, size=1, local_rank=0, backend=None):
        self.rank, self.size, self.local_rank, self.backend = rank, size, local_rank, backend

    @classmethod
    def declared(cls):
        """The place torchrun gave this process (RANK, WORLD_SIZE, LOCAL_RANK), before any group is
        joined; one process without torchrun."""
        rank, size, local_rank = (_env_int(name, default) for name, default in
                                  (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
        if size < 1 or not 0 <= rank < size:
            raise UserError(f"RANK={rank} of WORLD_SIZE={size} is not a place in a group; torchrun sets both: "
                            f"unset them to run one process")
        return cls(rank, size, local_rank)

    @classmethod
    def from_env(cls, device):
        """This process's place, the process group joined when torchrun started several."""
        declared = cls.declared()
        if declared.size < 2:
            return cls()
        if device == "cuda":
            torch.cuda.set_device(declared.local_rank)  # "cuda" is this rank's GPU from here on
        backend = "nccl" if device == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), declared.local_rank, backend)

    @property
    def main(self):
        return self.rank == 0

    def shard(self, n, batch_size):
        """This rank's rows of range(n): contiguous, whole batches."""
        n_batches = -(-n // batch_size)
        first, last = self.rank * n_batches // self.size, (self.rank + 1) * n_batches // self.size
        return range(min(first * batch_size, n), min(last * batch_size, n))

    def gather(self, value):
        """Every rank's value, in rank order (a barrier too)."""
        if self.size == 1:
            return [value]

        out = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value):
        """Rank 0's value on every rank."""
        if self.size == 1:
            return value

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def describe(self, device):
        """This rank's place and device, for the record."""
        where = {"rank": self.rank, "host": socket.gethostname(), "device": device}
        if device == "cuda":
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            where.update(gpu=props.name, uuid=str(props.uuid), index=torch.cuda.current_device())
        return where


def partial_name(world):
    return "scores.partial.npy" if world.size == 1 else f"scores.rank{world.rank}-of-{world.size}.partial.npy"


def progress_name(world):
    return "progress.json" if world.size == 1 else f"progress.rank{world.rank}-of-{world.size}.json"


def leave_process_group(finished):
    """Leave torchrun's process group before the interpreter exits. A gloo group still alive at exit
    can abort the process ("terminate called without an active exception"; seen in about one launch
    in eight), which torchrun takes for a failed rank and answers by killing the others, rank 0
    perhaps mid-record. A rank that finished its command waits for the others first."""
    if not dist.is_available() or not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()
