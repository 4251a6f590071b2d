"""Decode once per resolution: the models of one resolution scored from one pass over the images.

Each model keeps its own image set, row order, batch size, normalisation and run folder: a
`Scorer` cuts the stream into exactly the batches a single-model run would give it (from its
first unscored row, `batch_size` rows each, the remainder last), so its scores are those of a
run of its own, bit for bit. The pass follows one image order (that of most models); the models
that ride it share each decoded batch, copied to the device once. Models of another order, or
that do not fit on the device beside the others, then run in turn over the uint8 cache the pass
wrote (harness.data.cache), so no image is decoded twice.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from harness import progress
from harness.data.images import UnreadableImages
from harness.manifest import ModelSpec

PARAMS_SHARE = 0.25  # models ride together while their weights take at most this share of free device memory


class PassJob(Protocol):
    """What a pass needs of one model's run (harness.eval.run's job, which this floor cannot import)."""
    spec: ModelSpec
    model: torch.nn.Module | None
    rows: range  # the rows it scores (a shard under torchrun)
    done: int  # the first row not yet scored
    batch_size: int

    def progress_bar(self, position: int) -> Any: ...  # a tqdm bar

    def score_batch(self, rows: NDArray[np.int64], images: torch.Tensor) -> None: ...

    def release(self) -> None: ...


Job = TypeVar("Job", bound=PassJob)


class Scorer:
    """One model's side of a pass: batches of its own rows, scored into its run's scores."""
    pending: list[tuple[NDArray[np.int64], torch.Tensor]]  # rows taken, not yet scored, with their images

    def __init__(self, job: PassJob, device: str, bar_position: int = 0) -> None:
        self.job, self.device = job, device
        self.next = self.done = job.done  # first row not yet taken / not yet scored
        self.pending, self.n_pending = [], 0
        self.bar = job.progress_bar(bar_position)
        self.bar.set_postfix_str("decoding images", refresh=False)

    @property
    def finished(self) -> bool:
        return self.done >= self.job.rows.stop

    def feed(self, rows: NDArray[np.int64], images: torch.Tensor) -> None:
        """rows: ascending numpy rows of this model's order; images: their uint8 batch on the device."""
        keep = (rows >= self.next) & (rows < self.job.rows.stop)
        if not keep.any():
            return
        if not keep.all():
            images = images.index_select(0, torch.from_numpy(np.flatnonzero(keep)).to(images.device))
            rows = rows[keep]
        self.pending.append((rows, images))
        self.n_pending += len(rows)
        self.next = int(rows[-1]) + 1
        while self.n_pending >= self.job.batch_size:
            self._score(*self._take(self.job.batch_size))

    def close(self) -> None:
        """Score what is left (the last, shorter batch)."""
        if self.n_pending:
            self._score(*self._take(self.n_pending))
        self.bar.close()

    def _take(self, n: int) -> tuple[NDArray[np.int64], torch.Tensor]:
        rows, images, taken = [], [], 0
        while taken < n:
            r, x = self.pending[0]
            k = min(n - taken, len(r))
            rows.append(r[:k])
            images.append(x[:k])
            if k == len(r):
                self.pending.pop(0)
            else:
                self.pending[0] = (r[k:], x[k:])
            taken += k
        self.n_pending -= n
        return np.concatenate(rows), (images[0] if len(images) == 1 else torch.cat(images))

    def _score(self, rows: NDArray[np.int64], images: torch.Tensor) -> None:
        # said on the bar while the batch runs: with one batch of every image, the bar moves only at the end
        self.bar.set_postfix_str(f"scoring a batch of {len(rows)}", refresh=True)
        self.job.score_batch(rows, images)
        self.done = int(rows[-1]) + 1
        self.bar.set_postfix_str("" if self.finished else "decoding images", refresh=False)
        self.bar.update(len(rows))


def ride_together(jobs: Sequence[Job], device: str) -> tuple[list[Job], list[Job]]:
    """(jobs that ride the pass together, jobs to run in turn): on CUDA, while their weights take at
    most PARAMS_SHARE of the free memory (activations are one model's at a time, as in a run alone)."""
    if torch.device(device).type != "cuda" or len(jobs) < 2:
        return list(jobs), []
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    together: list = []
    alone: list = []
    used = 0
    for job in jobs:
        assert job.model is not None, "a released job has no model"
        size = sum(t.numel() * t.element_size() for t in [*job.model.parameters(), *job.model.buffers()])
        (together if not together or used + size <= PARAMS_SHARE * free else alone).append(job)
        used += size if job in together else 0
    return together, alone


def run_pass(scorers: list[Scorer], loader: Iterable[Any], device: str,
             on_failure: Callable[[Scorer, Exception], None]) -> None:
    """Feed every batch of `loader` (uint8 images, rows) to each scorer; one copy to the device per batch.
    `on_failure(scorer, error)` handles a model that fails (it stops feeding that one) or re-raises."""
    active = [s for s in scorers if not s.finished]
    with torch.inference_mode(), progress.Ticker([s.bar for s in scorers]):  # the bars' clocks move between batches
        for batch in loader:
            if not active:
                break
            if isinstance(batch, UnreadableImages):
                raise UnreadableError(batch)
            images, rows = batch
            images, rows = images.to(device, non_blocking=True), rows.numpy()
            for scorer in list(active):
                with _failing(scorer, on_failure, active):
                    scorer.feed(rows, images)
        for scorer in list(active):
            with _failing(scorer, on_failure, active):
                scorer.close()


class UnreadableError(Exception):
    """A batch held images that cannot be decoded; evaluate turns it into one line."""

    def __init__(self, bad: UnreadableImages) -> None:
        super().__init__(f"{len(bad)} image(s) cannot be decoded")
        self.bad = bad


@contextlib.contextmanager
def _failing(scorer: Scorer, on_failure: Callable[[Scorer, Exception], None], active: list[Scorer]) -> Iterator[None]:
    try:
        yield
    except Exception as e:  # one model's failure (not an interruption: that stops every model)
        active.remove(scorer)
        scorer.bar.close()
        on_failure(scorer, e)
