"""Does it fit? The largest batch whose measured GPU footprint stays within a VRAM budget.

For inference (one forward) and for training (two steps of forward + backward + AdamW: the
second step is the steady state, with the optimizer's moments already allocated). Batch sizes
double until one does not fit, then bisect; "does not fit" = measured peak over the budget or an
out-of-memory. Memory is assumed to grow with the batch size.

The footprint is this process's own peak (NVML process memory, else device used minus a
baseline taken before the first CUDA allocation), so it includes the CUDA context; without
NVML, PyTorch's max reserved memory (which does not) is used and said so.
"""
import re

import torch

from harness.errors import UserError
from harness.measure.measurement import SpanMeasurement, own_peak_vram
from harness.measure.throughput import autocast, free_memory, synthetic_batch

UNITS_MIB = {"": 1024, "g": 1024, "gb": 1024, "gib": 1024, "m": 1, "mb": 1, "mib": 1}


def parse_size_mib(text):
    """'12GB' -> 12288.0 MiB ('GB' as on a card's box: GiB); 'none' or '0' -> None (no budget)."""
    if text is None or str(text).strip().lower() in ("none", "0", ""):
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in UNITS_MIB or float(m.group(1)) <= 0:
        raise UserError(f"cannot read the VRAM budget {text!r}; write it like 12GB, 11.5GiB or 8000MiB")
    return float(m.group(1)) * UNITS_MIB[m.group(2).lower()]


def largest_fitting_batch(fits, max_batch):
    """Largest b in 1..max_batch with fits(b) True, by doubling then bisection. Returns (b, capped)."""
    good, b = 0, 1
    while b <= max_batch and fits(b):
        good, b = b, b * 2
    if good == 0:
        return 0, False
    bad = min(b, max_batch + 1)  # the first size known (or assumed, past the cap) not to fit
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good, good == max_batch


def inference_work(model, resolution, device, amp=None, channels_last=False):
    def run(batch_size):
        model.eval()
        x = synthetic_batch(batch_size, resolution, device, channels_last)
        with torch.inference_mode(), autocast(device, amp):
            model(x)
    return run


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def train_work(model, resolution, device, amp=None, channels_last=False, steps=2):
    def run(batch_size):
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        x = synthetic_batch(batch_size, resolution, device, channels_last)
        for _ in range(steps):
            with autocast(device, amp):
                logits = _logits(model(x)).float()
            target = torch.randint(0, 2, logits.shape, device=logits.device).float()
            torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        del optimizer  # its moments are freed before the next trial
        model.eval()
    return run


def footprint_mib(work, batch_size, device, baseline_mib=None):
    """(MiB, source) of one call of work(batch_size) on the GPU."""
    with SpanMeasurement(device, baseline_mib=baseline_mib) as m:
        work(batch_size)
    result = m.result()
    mib, source = own_peak_vram(result)
    if mib is None:
        return result["torch_max_reserved_mib"], f"torch max reserved (excludes the CUDA context; {source})"
    return mib, source


class TrialFailed(Exception):
    """A fit trial failed for a reason other than memory."""


def search(work, device, budget_mib, max_batch, baseline_mib=None, measure=footprint_mib):
    """Largest fitting batch for one kind of work, with every trial kept for the record."""
    trials = []

    def fits(b):
        free_memory(device)
        oom = False
        try:
            mib, source = measure(work, b, device, baseline_mib)
        except torch.cuda.OutOfMemoryError:
            oom = True
        except Exception as e:  # not a memory limit: stop this search and say why
            raise TrialFailed(f"failed at batch {b}: {type(e).__name__}: {e}") from None
        if oom:
            free_memory(device, collect=True)
            trials.append({"batch_size": b, "oom": True, "footprint_mib": None})
            return False
        trials.append({"batch_size": b, "oom": False, "footprint_mib": mib, "source": source})
        return mib <= budget_mib

    best, capped = largest_fitting_batch(fits, max_batch)
    free_memory(device)
    return best, capped, trials


def find_fits(model, device, budget_mib, inputs, *, max_batch=256, baseline_mib=None, measure=footprint_mib):
    """The record's bench["fits"]: largest inference and training batch within budget_mib, fed
    `inputs` (a SyntheticInput)."""
    out = {"budget_mib": budget_mib, "inference_max_batch": None, "train_max_batch": None,
           "max_batch_searched": max_batch, "reasons": {}}
    if budget_mib is None:
        out["reasons"] = {k: "no VRAM budget given" for k in ("inference_max_batch", "train_max_batch")}
        return out
    if torch.device(device).type != "cuda":
        out["reasons"] = {k: "needs a GPU" for k in ("inference_max_batch", "train_max_batch")}
        return out
    for key, work in (("inference", inference_work), ("train", train_work)):
        try:
            best, capped, trials = search(work(model, inputs.resolution, device, inputs.amp, inputs.channels_last), device,
                                          budget_mib, max_batch, baseline_mib, measure)
        except TrialFailed as e:
            free_memory(device, collect=True)
            out["reasons"][f"{key}_max_batch"] = f"{key} step {e}"
            continue
        out[f"{key}_max_batch"] = best
        out[f"{key}_trials"] = trials
        if best == 0:
            out["reasons"][f"{key}_max_batch"] = "batch 1 does not fit in the budget"
        if capped:
            out["reasons"][f"{key}_max_batch"] = f"fits at the search cap {max_batch}; larger not tried"
    out["notes"] = ["measured on this GPU: on a smaller card allocator caching and cuDNN workspace "
                    "choices may shift the limit slightly",
                    "train = 2 steps of forward + backward + AdamW (no GradScaler with fp16)"]
    return out
