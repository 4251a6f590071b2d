"""Micro-batches with gradient accumulation, only where no statistic of the batch is computed.

A batch of B images runs as chunks of `micro_batch` images, each backward adding into the same
gradients. The loss is a mean over the batch's images (the authors' `-sum / B / n_classes * 1000`),
so chunk i of n_i images is weighted n_i / B: the accumulated gradient is the full batch's, up to
the order of the float sums. That holds only when each image's loss depends on that image alone:
- Swin (LayerNorm) and ResNet-101 with FrozenBatchNorm: yes; micro-batches are allowed;
- CvT (BatchNorm in its attention projections) and TResNet (ABN): a BatchNorm in training mode
  normalises each chunk by the chunk's own mean and variance and updates its running statistics
  once per chunk: other numbers, so micro-batches are refused.
Dropout and DropPath draw their masks per chunk: the same distribution, not the same draws as the
full batch (as with any change of batch layout, e.g. another number of GPUs).
"""
import logging
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from harness.errors import UserError

logger = logging.getLogger(__name__)

# Q2L backbone name (the authors' --backbone) -> why its batch statistics rule out micro-batches.
BATCH_STATISTICS = {
    "CvT_w24": "CvT normalises its attention projections with BatchNorm over the batch",
    "tresnetl": "TResNet's ABN layers normalise over the batch and update their running statistics",
    "tresnetl_v2": "TResNet's ABN layers normalise over the batch and update their running statistics",
}


def check_micro_batch(backbone: str, micro_batch: int | None, batch_size: int) -> None:
    """Refuse a micro-batch the backbone or the batch size rules out; before any model is built.
    `batch_size` is the batch of one process (the global batch / world size)."""
    if micro_batch is None:
        return
    if micro_batch < 1:
        raise UserError(f"--micro-batch must be at least 1 (got {micro_batch})")
    if micro_batch > batch_size:
        raise UserError(f"--micro-batch {micro_batch} is larger than the batch of {batch_size} images per "
                        f"process; give at most {batch_size}, or leave it out")
    if micro_batch < batch_size and backbone in BATCH_STATISTICS:
        raise UserError(f"--micro-batch is refused for {backbone}: {BATCH_STATISTICS[backbone]}, so smaller "
                        f"chunks would change the maths; use --activation-checkpointing and the offloads instead")


def batch_statistics_reason(model: nn.Module) -> str | None:
    """Why `model`, as it is now (training mode), cannot take micro-batches; None when it can."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            return f"{name} ({type(m).__name__}) normalises over the batch in training mode"
    return None


def accumulate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], micro_batch: int | None, *,
               backward: Callable[[torch.Tensor], None] | None = None,
               autocast: Callable[[], object] | None = None) -> torch.Tensor:
    """Forward and backward of one batch, in chunks of `micro_batch` images (None: the whole batch,
    exactly `backward(loss_fn(model(images), targets))`). Gradients are added to `.grad`; the caller
    zeroes them before and steps after. `loss_fn` must be a mean over the images it is given (the
    authors' loss as it is, e.g. `asymmetric_loss(logits, targets)`, not with `batch_size=B`): each
    chunk's is weighted here by its share of the batch.
    `backward` defaults to `loss.backward()` (GradScaler: `lambda loss: scaler.scale(loss).backward()`);
    `autocast` makes the context of each forward and loss (e.g. `lambda: torch.autocast("cuda")`).
    A DDP model synchronises its gradients on the last chunk only. Returns the batch's loss, detached."""
    backward = backward or (lambda loss: loss.backward())
    autocast = autocast or nullcontext
    total = images.shape[0]
    if micro_batch is None or micro_batch >= total:
        with autocast():
            loss = loss_fn(model(images), targets)
        backward(loss)
        return loss.detach()
    reason = batch_statistics_reason(model)
    if reason:
        raise UserError(f"micro-batches are refused: {reason}; train with the full batch")
    starts = range(0, total, micro_batch)
    loss_sum = None
    for i, start in enumerate(starts):
        chunk = slice(start, start + micro_batch)
        n = images[chunk].shape[0]
        last = i == len(starts) - 1
        with (nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()):
            with autocast():
                loss = loss_fn(model(images[chunk]), targets[chunk]) * (n / total)
            backward(loss)
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    return loss_sum
