"""`--vram-budget 12GB`: the first memory plan, in a fixed order, whose MEASURED peak fits.

Order (each keeps the maths; see memory.py): as written; activation checkpointing; + the EMA on
the CPU; + AdamW's state on the CPU; + micro-batches of B/2, B/4, ... 1 where the backbone allows
them. Each plan is measured, not estimated from a formula:
- on a GPU (`measure_cuda`): two training steps as the loop runs them (forward, loss, backward,
  AdamW, EMA), this process's peak from NVML (as the bench fit search), else PyTorch's max reserved;
  PyTorch's max allocated beside it;
- on the CPU (`measure_cpu`): the bytes of the tensors autograd saves for the backward, counted by
  saved_tensors_hooks in one forward and attributed to the blocks that checkpointing wraps, plus the
  bytes of the parameters, gradients, AdamW moments and EMA copy that stay on the device. Transient
  buffers (activation gradients, kernel workspaces, the CUDA context) are not in it: it is a lower
  bound of a GPU's peak, labelled as such.
A budget below every measured plan is a UserError naming the smallest measured need.
"""
import logging
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.errors import UserError
from harness.measure.fit import UNITS_MIB
from harness.measure.measurement import SpanMeasurement, own_peak_vram
from harness.measure.throughput import free_memory
from harness.q2l.checkpointing import checkpointed_block_types
from harness.q2l.memory import MemoryPlan, apply_memory_plan
from harness.q2l.micro_batches import accumulate

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
GIB = 1024 * MIB
EMA_DECAY = 0.9997


def parse_vram_budget(text: str) -> int:
    """'12GB', '12GiB', '11.5G', '8000MiB' -> bytes. GB means GiB, as on a card's box and in
    `harness bench --vram-budget`; a unit is required."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]+)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS_MIB or float(m.group(1)) <= 0:
        raise UserError(f"cannot read the VRAM budget {text!r}; write it like 12GB, 11.5GiB or 8000MiB")
    return int(float(m.group(1)) * UNITS_MIB[m.group(2).lower()] * MIB)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


@dataclass(frozen=True)
class Measured:
    """One plan's measured peak (None: out of memory) and how it was measured."""
    plan: MemoryPlan
    peak_bytes: int | None
    source: str
    parts: dict = field(default_factory=dict)  # named byte counts behind the peak

    def as_record(self) -> dict:
        return {"plan": self.plan.as_record(), "peak_bytes": self.peak_bytes,
                "peak_gib": None if self.peak_bytes is None else round(self.peak_bytes / GIB, 3),
                "source": self.source, "parts": dict(self.parts)}


def candidate_plans(batch_size: int, micro_batches_allowed: bool) -> list[MemoryPlan]:
    """The plans tried, in order: each adds one technique to the one before."""
    plans = [MemoryPlan(), MemoryPlan(activation_checkpointing=True),
             MemoryPlan(activation_checkpointing=True, offload_ema=True),
             MemoryPlan(activation_checkpointing=True, offload_ema=True, offload_optimizer=True)]
    chunk = batch_size
    while micro_batches_allowed and chunk > 1:
        chunk = (chunk + 1) // 2
        plans.append(MemoryPlan(True, True, True, micro_batch=chunk))
    return plans


def choose_plan(budget_bytes: int, plans: list[MemoryPlan],
                measure: Callable[[MemoryPlan], Measured]) -> tuple[MemoryPlan, list[Measured]]:
    """The first of `plans` whose measured peak is within the budget, and every measurement made."""
    trials = []
    for plan in plans:
        result = measure(plan)
        trials.append(result)
        logger.info("memory plan [%s]: %s (%s)", plan.describe(),
                    "out of memory" if result.peak_bytes is None else gib(result.peak_bytes), result.source)
        if result.peak_bytes is not None and result.peak_bytes <= budget_bytes:
            return plan, trials
    measured = [t for t in trials if t.peak_bytes is not None]
    if not measured:
        raise UserError(f"every memory plan ran out of memory on this device, so none fits {gib(budget_bytes)}; "
                        f"lower --batch-size")
    best = min(measured, key=lambda t: t.peak_bytes)
    raise UserError(f"no memory plan fits the VRAM budget of {gib(budget_bytes)}: the smallest measured need is "
                    f"{gib(best.peak_bytes)} ({best.plan.describe()}); give a larger --vram-budget or a smaller "
                    f"--batch-size")


# ---------------------------------------------------------------- what a training step holds


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def state_bytes(model: nn.Module) -> dict:
    """Bytes of the model's state and of what training adds to it (fp32 master weights, as AMP keeps)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return {"weights_and_buffers": tensor_bytes(model.state_dict().values()),
            "gradients": tensor_bytes(trainable),
            "adamw_moments": 2 * tensor_bytes(trainable),
            "ema_copy": tensor_bytes(model.state_dict().values())}


def _storage(t):
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


class _Saved:
    """What autograd holds for one saved tensor: freed when the graph lets go of it."""
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


class SavedTensors:
    """Storages autograd saves for the backward during one forward, each attributed to the
    outermost checkpointable block running when it was saved (None: outside every block). Only
    storages still held when the forward ends count (a part of the graph no gradient flows
    through lets go of its saved tensors)."""

    def __init__(self, model: nn.Module, block_types: tuple[type, ...]):
        self.model = model
        self.block_types = block_types
        self.params = {_storage(p)[0] for p in model.parameters()}
        self.outside = {}        # storage pointer -> bytes
        self.blocks = []         # per block call: (input storages, saved storages), each pointer -> bytes
        self._current = None
        self._inputs_alive = []  # as checkpointing keeps them: no later tensor reuses their memory
        self._held = {}          # storage pointer -> how many saved tensors hold it now

    def _pack(self, t):
        ptr, nbytes = _storage(t)
        saved = _Saved(t)
        if ptr not in self.params:  # weights are counted with the model's state
            (self.outside if self._current is None else self._current[1])[ptr] = nbytes
            self._held[ptr] = self._held.get(ptr, 0) + 1
            weakref.finalize(saved, self._release, ptr)
        return saved

    def _release(self, ptr):
        self._held[ptr] -= 1
        if not self._held[ptr]:
            del self._held[ptr]

    def _enter(self, module, args, kwargs):
        if self._current is None:
            inputs = {}
            for a in list(args) + list(kwargs.values()):
                if torch.is_tensor(a):
                    ptr, nbytes = _storage(a)
                    inputs[ptr] = nbytes
                    self._inputs_alive.append(a)
            self._current = (inputs, {})
            self._owner = module

    def _leave(self, module, args, kwargs, output):
        if self._current is not None and module is self._owner:
            self.blocks.append(self._current)
            self._current = None

    def run(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        blocks = [m for m in self.model.modules() if isinstance(m, self.block_types)]
        handles = [m.register_forward_pre_hook(self._enter, with_kwargs=True) for m in blocks]
        handles += [m.register_forward_hook(self._leave, with_kwargs=True) for m in blocks]
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved.tensor):
                return forward()  # the caller keeps the output (and so the saved tensors) alive
        finally:
            for h in handles:
                h.remove()

    def all_bytes(self) -> int:
        """Everything saved and still held: the activations a plain backward needs."""
        merged = dict(self.outside)
        for _, saved in self.blocks:
            merged.update(saved)
        return sum(n for ptr, n in merged.items() if ptr in self._held)

    def checkpointed_bytes(self) -> tuple[int, int]:
        """(kept through the forward, largest recompute) under per-block checkpointing: what is saved
        outside the blocks plus the inputs of every block that saves anything (a block no gradient
        passes through, as a frozen stage, keeps nothing); then, in the backward, one block's insides."""
        kept = {ptr: n for ptr, n in self.outside.items() if ptr in self._held}
        for inputs, saved in self.blocks:
            if any(ptr in self._held for ptr in saved):
                kept.update(inputs)
        recompute = max((sum(n for ptr, n in saved.items() if ptr in self._held and ptr not in kept)
                         for _, saved in self.blocks), default=0)
        return sum(kept.values()), recompute


def synthetic_step_input(batch_size: int, image_size: int, num_classes: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device)
    targets = torch.randint(0, 2, (batch_size, num_classes), generator=g).double().to(device)
    return images, targets


def mean_over_images_bce(logits, targets):
    """A stand-in of the authors' loss for measuring: a float64 sum over labels, mean over images."""
    x = logits.double()
    return nn.functional.binary_cross_entropy_with_logits(x, targets, reduction="sum") / x.shape[0]


def saved_tensor_bytes(model: nn.Module, images_per_forward: int, image_size: int, amp: bool = False) -> dict:
    """Saved-tensor bytes of one forward in training mode: all of them (a plain backward's
    activations), and under per-block checkpointing what is kept and the largest recompute.
    `amp`: CPU autocast in bfloat16 (2 bytes an element, as fp16 autocast on a GPU)."""
    model.train()
    images = torch.randn(images_per_forward, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    meter = SavedTensors(model, checkpointed_block_types())
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = meter.run(lambda: model(images))
    kept, recompute = meter.checkpointed_bytes()
    figures = {"saved_bytes": meter.all_bytes(), "saved_kept_bytes": kept, "saved_recompute_bytes": recompute}
    del out
    return figures


def cpu_peak(plan: MemoryPlan, states: dict, saved: dict) -> Measured:
    """A plan's device peak from a model's state bytes (state_bytes) and its saved-tensor bytes at
    the plan's images per forward (saved_tensor_bytes)."""
    if plan.activation_checkpointing:
        activations = saved["saved_kept_bytes"] + saved["saved_recompute_bytes"]
        parts = {k: saved[k] for k in ("saved_kept_bytes", "saved_recompute_bytes")}
    else:
        activations = saved["saved_bytes"]
        parts = {"saved_bytes": activations}
    parts.update(states)
    resident = states["weights_and_buffers"] + (0 if plan.offload_ema else states["ema_copy"])
    backward_peak = resident + states["gradients"] + activations + (
        0 if plan.offload_optimizer else states["adamw_moments"])
    step_peak = resident + states["gradients"] + states["adamw_moments"]  # offloaded moments come back for the step
    parts.update(backward_peak_bytes=backward_peak, step_peak_bytes=step_peak)
    return Measured(plan, max(backward_peak, step_peak),
                    "cpu: saved tensors (measured) + weights, gradients, AdamW moments, EMA (counted); "
                    "excludes transient buffers and the CUDA context", parts)


def measure_cpu(make_model: Callable[[], nn.Module], plan: MemoryPlan, batch_size: int, image_size: int,
                amp: bool = False) -> Measured:
    """The CPU measure of one plan: saved tensors at the plan's images per forward + the state."""
    model = make_model()
    saved = saved_tensor_bytes(model, plan.micro_batch or batch_size, image_size, amp)
    return cpu_peak(plan, state_bytes(model), saved)


def measure_cuda(make_model: Callable[[], nn.Module], plan: MemoryPlan, batch_size: int, image_size: int,
                 num_classes: int, device, amp: bool = False, loss_fn=mean_over_images_bce,
                 steps: int = 2) -> Measured:
    """Peak GPU memory of `steps` training steps under `plan` (the second is the steady state: the
    AdamW moments exist). fp16 autocast and GradScaler with `amp`, as the authors' --amp."""
    device = torch.device(device)
    free_memory(device, collect=True)
    model = optimizer = offload = ema = None
    stepped = False
    try:
        with SpanMeasurement(device) as span:
            model = make_model().to(device).train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            offload = apply_memory_plan(plan, model, optimizer)
            ema = {k: v.detach().to(plan.ema_device or device, copy=True) for k, v in model.state_dict().items()}
            # scale 1: a skipped step (fp16 overflow at the usual 2**16) would never allocate the AdamW moments
            scaler = torch.amp.GradScaler(device.type, init_scale=1.0, enabled=amp)
            images, targets = synthetic_step_input(batch_size, image_size, num_classes, device)
            for _ in range(steps):
                optimizer.zero_grad()
                accumulate(model, images, targets, loss_fn, plan.micro_batch,
                           backward=lambda loss: scaler.scale(loss).backward(),
                           autocast=lambda: torch.autocast(device.type, dtype=torch.float16, enabled=amp))
                scaler.step(optimizer)
                scaler.update()
                stepped = bool(optimizer.state)
                with torch.no_grad():  # the authors' ModelEma update
                    for e, m in zip(ema.values(), model.state_dict().values()):
                        e.copy_(EMA_DECAY * e + (1.0 - EMA_DECAY) * m.to(e.device))
    except torch.cuda.OutOfMemoryError:
        return Measured(plan, None, "cuda: out of memory")
    finally:
        if offload is not None:
            offload.remove()
        del model, optimizer, offload, ema
        free_memory(device, collect=True)
    result = span.result()
    if not stepped:  # at scale 1 only a broken model does this
        raise RuntimeError("GradScaler skipped every measured step (inf/NaN gradients): the AdamW moments "
                           "were never allocated, so the peak cannot be measured")
    mib, source = own_peak_vram(result)
    if mib is None:
        mib, source = result["torch_max_reserved_mib"], f"torch max reserved (no CUDA context; NVML: {source})"
    parts = {"torch_max_allocated_bytes": int(result["torch_max_allocated_mib"] * MIB),
             "torch_max_reserved_bytes": int(result["torch_max_reserved_mib"] * MIB)}
    return Measured(plan, int(mib * MIB), f"cuda: {source}", parts)


def plan_for_budget(budget: str, make_model: Callable[[], nn.Module], backbone_allows_micro_batches: bool,
                    batch_size: int, image_size: int, num_classes: int, device, amp: bool = False,
                    ) -> tuple[MemoryPlan, list[Measured]]:
    """`--vram-budget`: parse, then measure the plans in order on `device` until one fits."""
    budget_bytes = parse_vram_budget(budget)
    plans = candidate_plans(batch_size, backbone_allows_micro_batches)
    if torch.device(device).type == "cuda":
        def measure(plan):
            return measure_cuda(make_model, plan, batch_size, image_size, num_classes, device, amp)
    else:
        def measure(plan):
            return measure_cpu(make_model, plan, batch_size, image_size, amp)
    return choose_plan(budget_bytes, plans, measure)
