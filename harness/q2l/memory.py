"""Memory techniques that keep Query2Label's training maths: what the training loop calls.

    plan = MemoryPlan(activation_checkpointing=True, offload_ema=True, offload_optimizer=True,
                      micro_batch=None)                     # from the flags, or plan.choose_plan
    check_micro_batch(backbone, plan.micro_batch, batch_per_process)   # before building the model
    model = ...                                             # built, weights loaded, on the device
    optimizer = torch.optim.AdamW(...)
    offload = apply_memory_plan(plan, model, optimizer)     # checkpointing; AdamW state offload
    ema = ModelEma(model, 0.9997, device=plan.ema_device)   # the EMA copy on the host when offloaded
    for images, targets in loader:
        optimizer.zero_grad()
        loss = accumulate(model, images, targets, criterion, plan.micro_batch,
                          backward=lambda l: scaler.scale(l).backward(),
                          autocast=lambda: torch.autocast("cuda", enabled=amp))
        scaler.step(optimizer); scaler.update(); scheduler.step(); ema.update(model)
    record["memory"] = plan.as_record()                     # what ran

Each technique is exact: activation checkpointing and both offloads give the same bits as
without them (checkpointing.py, offload.py); micro-batches give the full batch's gradient up to the
order of float sums and are refused where a BatchNorm sees the batch (micro_batches.py).
After a resume's `optimizer.load_state_dict`, the offload moves the loaded state to the host itself.
"""
from dataclasses import asdict, dataclass

import torch

from harness.errors import UserError
from harness.q2l.checkpointing import apply_activation_checkpointing
from harness.q2l.micro_batches import accumulate, check_micro_batch
from harness.q2l.offload import OptimizerStateOffload

__all__ = ["MemoryPlan", "apply_memory_plan", "apply_activation_checkpointing", "OptimizerStateOffload",
           "accumulate", "check_micro_batch"]


@dataclass(frozen=True)
class MemoryPlan:
    """Which memory techniques a training uses; recorded as what ran."""
    activation_checkpointing: bool = False
    offload_ema: bool = False
    offload_optimizer: bool = False
    micro_batch: int | None = None  # images per forward/backward; None: the whole batch at once

    def __post_init__(self):
        if self.micro_batch is not None and self.micro_batch < 1:
            raise UserError(f"--micro-batch must be at least 1 (got {self.micro_batch})")

    @property
    def ema_device(self) -> str | None:
        """Where the EMA copy lives: "cpu" when offloaded, else None (beside the model)."""
        return "cpu" if self.offload_ema else None

    def techniques(self) -> list[str]:
        names = []
        if self.activation_checkpointing:
            names.append("activation checkpointing")
        if self.offload_ema:
            names.append("EMA on CPU")
        if self.offload_optimizer:
            names.append("AdamW state on CPU")
        if self.micro_batch is not None:
            names.append(f"micro-batches of {self.micro_batch}")
        return names

    def describe(self) -> str:
        return ", ".join(self.techniques()) or "no memory technique"

    def as_record(self) -> dict:
        return {**asdict(self), "techniques": self.techniques()}


def apply_memory_plan(plan: MemoryPlan, model: torch.nn.Module,
                      optimizer: torch.optim.Optimizer | None = None) -> OptimizerStateOffload | None:
    """Checkpoint `model`'s blocks and offload `optimizer`'s state as `plan` says (in place).
    Returns the offload (None without one). The EMA (plan.ema_device) and the micro-batches
    (accumulate) are the training loop's to use."""
    if plan.activation_checkpointing:
        apply_activation_checkpointing(model)
    if plan.offload_optimizer:
        if optimizer is None:
            raise ValueError("offload_optimizer needs the optimizer")
        return OptimizerStateOffload(optimizer)
    return None
