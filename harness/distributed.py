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

    def main_only(self, step):
        """step() on rank 0 alone, the others waiting for its outcome: its value on rank 0 (None on the
        others), and a failure there raised on every rank, so no rank is left waiting in a collective
        for one that has stopped (a UserError or OSError keeps its one line on every rank)."""
        value, failure = None, None
        if self.main:
            try:
                value = step()
            except Exception as e:
                failure = e
        if self.size > 1:
            shared = self.broadcast(None if failure is None else _shareable(failure))
            if shared is not None and not self.main:
                raise shared
        if failure is not None:
            failure.on_every_rank = self.size > 1
            raise failure
        return value

    def every_rank(self, step):
        """step() on every rank; a failure on any rank raised on every rank (the lowest failing rank's,
        shown by that rank alone), so they stop together instead of some waiting in the next collective."""
        value, failure = None, None
        try:
            value = step()
        except Exception as e:
            failure = e
        if self.size > 1:
            failures = self.gather(None if failure is None else _shareable(failure))
            first = next((rank for rank, f in enumerate(failures) if f is not None), None)
            if first is not None and first != self.rank:  # one rank says it; the others stop with it
                raise failures[first]
        if failure is not None:
            failure.on_every_rank = self.size > 1
            raise failure
        return value

    def describe(self, device):
        """This rank's place and device, for the record."""
        where = {"rank": self.rank, "host": socket.gethostname(), "device": device}
        if device == "cuda":
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            where.update(gpu=props.name, uuid=str(props.uuid), index=torch.cuda.current_device())
        return where


def _shareable(error):
    """What another rank raises for `error`: the same one line for a UserError or OSError (shown once,
    by the rank that failed), else a UserError naming the failure and where its traceback is."""
    if isinstance(error, (UserError, OSError)):
        copy = type(error)(*error.args) if not isinstance(error, OSError) else OSError(error.errno, error.strerror,
                                                                                       error.filename)
    else:
        copy = UserError(f"another process failed ({type(error).__name__}: {str(error)[:200]}); see its traceback")
    copy.shown_elsewhere = True  # the CLI prints it on the rank that failed only
    copy.on_every_rank = True
    return copy


def refuse_another_world(run_dir, saved, settings):
    """A run resumes on as many processes as it started with: its shards, seeds and state are per process."""
    if "processes" in saved and saved["processes"] != settings["processes"]:
        raise UserError(f"cannot resume {run_dir} on {settings['processes']} process(es): it was trained on "
                        f"{saved['processes']}; start it with torchrun --nproc_per_node {saved['processes']} "
                        f"(or without torchrun for 1), or start a new run")


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
