"""Per-block activation checkpointing that leaves the numbers unchanged.

Each block of the backbone (ResNet and TResNet residual blocks, Swin blocks, CvT blocks) and each
transformer layer keeps only its inputs during the forward and recomputes its insides during the
backward (torch.utils.checkpoint, non-reentrant). What makes it exact:
- the RNG state is saved before the block and restored for the recompute, so dropout and DropPath
  draw the same masks twice, and the global RNG moves on as without checkpointing;
- a BatchNorm in training mode would update its running statistics (and `num_batches_tracked`)
  a second time during the recompute: they are copied before the recompute and put back after it
  (CvT's projections, TResNet's ABN);
- the module keeps its class's maths and its attributes: its class is swapped for a subclass whose
  forward goes through the checkpoint, so parameter names and state-dict keys stay the authors'.
Without gradients (evaluation, the EMA copy) a block runs its plain forward.
"""
import logging
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.models.backbones.cvt import CvTBlock
from harness.models.backbones.swin import SwinBlock
from harness.models.backbones.tresnet import BasicBlock as TResNetBasicBlock
from harness.models.backbones.tresnet import Bottleneck as TResNetBottleneck
from harness.models.transformer import DecoderLayer, EncoderLayer

logger = logging.getLogger(__name__)


def checkpointed_block_types() -> tuple[type, ...]:
    """The module classes checkpointed one by one."""
    from torchvision.models.resnet import BasicBlock, Bottleneck  # lazy: about a second, only R101 needs it

    return (Bottleneck, BasicBlock, TResNetBasicBlock, TResNetBottleneck, SwinBlock, CvTBlock,
            EncoderLayer, DecoderLayer)


class _RunningStatisticsKept:
    """Context of a recompute: the running statistics of the block's BatchNorms are put back as they
    were before it, so the step updates them once, as without checkpointing."""

    def __init__(self, block: nn.Module):
        self.block = block

    def __enter__(self):
        self.saved = [(buffer, buffer.clone()) for buffer in running_statistics(self.block)]

    def __exit__(self, *exc):
        with torch.no_grad():
            for buffer, before in self.saved:
                buffer.copy_(before)
        return False


def running_statistics(module: nn.Module) -> list[torch.Tensor]:
    """Buffers that a forward in training mode changes: BatchNorm running mean, variance and counter."""
    found = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            found += [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    return found


class CheckpointedBlock:
    """Mixin put in front of a block's class: forward through torch.utils.checkpoint."""

    def forward(self, *args, **kwargs):
        plain = super().forward
        if not torch.is_grad_enabled():
            return plain(*args, **kwargs)
        return checkpoint(plain, *args, use_reentrant=False, preserve_rng_state=True,
                          context_fn=lambda: (nullcontext(), _RunningStatisticsKept(self)), **kwargs)


_SUBCLASSES = {}


def _checkpointed_class(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Checkpointed{cls.__name__}", (CheckpointedBlock, cls),
                                {"__module__": __name__})
    return _SUBCLASSES[cls]


def apply_activation_checkpointing(model: nn.Module, block_types: tuple[type, ...] | None = None) -> int:
    """Checkpoint every block of `model` (outermost ones; a block inside a block is left alone).
    In place; returns how many blocks. Names, parameters and buffers are unchanged."""
    block_types = block_types or checkpointed_block_types()
    count = 0

    def visit(module):
        nonlocal count
        for child in module.children():
            if isinstance(child, CheckpointedBlock):
                count += 1
            elif isinstance(child, block_types):
                child.__class__ = _checkpointed_class(type(child))
                count += 1
            else:
                visit(child)

    visit(model)
    if count == 0:
        raise ValueError(f"no block to checkpoint in {type(model).__name__}")
    logger.info("activation checkpointing on %d blocks of %s", count, type(model).__name__)
    return count


def remove_activation_checkpointing(model: nn.Module) -> None:
    """Undo apply_activation_checkpointing (in place)."""
    for m in model.modules():
        if isinstance(m, CheckpointedBlock):
            m.__class__ = m.__class__.__mro__[2]  # (Checkpointed<cls>, CheckpointedBlock, cls, ...)
