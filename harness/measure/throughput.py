"""Model-only throughput: synthetic input at the model's resolution, CUDA-synchronised timing.

For one batch size: warm-up (at least `warmup` calls AND at least `warmup_s` seconds, so lazy
initialisation, cuDNN autotuning and torch.compile are done before timing), then `iters` timed
calls, each closed by a synchronisation: latency percentiles per batch and images/s. Memory and
energy come from an SpanMeasurement around the timed calls only.
A batch-size sweep records an out-of-memory as such, frees the memory and goes on.
"""
import contextlib
import gc
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from harness import progress
from harness.measure.measurement import SpanMeasurement, synchronize

logger = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
RESULT_KEYS = ("peak_vram_mib", "torch_max_allocated_mib", "torch_max_reserved_mib",
               "energy_j_per_image", "peak_rss_mib", "gpu_util_mean", "power_w_mean")


@dataclass(frozen=True)
class SyntheticInput:
    """What the model is fed: torch.randn batches at this resolution, in this precision and layout."""
    resolution: int
    amp: str | None = None        # None (fp32), "bf16" or "fp16" autocast
    channels_last: bool = False


@dataclass(frozen=True)
class Timing:
    """How long to time: at least `iters` calls AND `min_time_s` seconds, after at least `warmup`
    calls AND `warmup_s` seconds of warm-up."""
    iters: int
    warmup: int
    warmup_s: float = 0.0
    min_time_s: float = 0.0


def autocast(device, amp):
    """Autocast for amp in {None, "bf16", "fp16"}; fp32 (no autocast) for None."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[amp])


class HostOutOfMemory(MemoryError):
    """A CPU batch that cannot be held in this machine's free memory: recorded as an out-of-memory."""


def host_memory_available():
    """Bytes of host memory free for a new allocation (Linux's MemAvailable; else the free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def synthetic_batch(batch_size, resolution, device, channels_last=False):
    if torch.device(device).type == "cpu":  # past free memory the kernel's OOM killer ends the process: refuse first
        need, free = batch_size * 3 * resolution * resolution * 4, host_memory_available()
        if need > free:
            raise HostOutOfMemory(f"the input batch alone needs {need / 2**30:,.1f} GiB, {free / 2**30:,.1f} GiB "
                                  f"of host memory is free")
    x = torch.randn(batch_size, 3, resolution, resolution, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def free_memory(device, collect=False):
    """Give back what a finished (or failed) attempt held, so the next one starts clean.

    Tensors go with their last reference; collect=True also breaks reference cycles (after an
    OOM). It is not the default: one gc.collect() takes ~0.3 s with torch loaded.
    """
    if collect:
        gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def time_model(model, batch_size, device, inputs, timing, baseline_mib=None):
    """Time `model` on one synthetic batch (`inputs`, a SyntheticInput) as `timing` says; return
    (results row, full measurement dict).

    The timed span runs at least `iters` calls AND at least `min_time_s` seconds: NVML's power
    and energy readings are averaged over about a second, so a short span would mostly measure
    what came before it."""
    x = synthetic_batch(batch_size, inputs.resolution, device, inputs.channels_last)
    latencies = []
    with torch.inference_mode(), autocast(device, inputs.amp):
        start, n, first_call_s, call_s = time.perf_counter(), 0, None, 0.0
        while n < timing.warmup or time.perf_counter() - start < timing.warmup_s:
            t = time.perf_counter()
            model(x)
            synchronize(device)
            n, call_s = n + 1, time.perf_counter() - t
            if first_call_s is None:  # holds compilation, autotuning and lazy initialisation
                first_call_s = call_s
        expected = max(timing.iters * call_s, timing.min_time_s)  # at the last warm-up call's pace
        logger.info(f"  batch {batch_size}: {n} warm-up call(s) in {progress.duration(time.perf_counter() - start)}; "
                    f"now at least {timing.iters} timed calls, about {progress.duration(expected)}")
        with SpanMeasurement(device, baseline_mib=baseline_mib) as m:
            span_start = time.perf_counter()
            while len(latencies) < timing.iters or time.perf_counter() - span_start < timing.min_time_s:
                t = time.perf_counter()
                model(x)
                synchronize(device)
                latencies.append(time.perf_counter() - t)
            m.count(batch_size * len(latencies))
    measurement = m.result()
    p50, p90, p99 = np.percentile(np.array(latencies) * 1000.0, [50, 90, 99]).tolist()
    row = {"batch_size": batch_size, "oom": False,
           "images_per_s": batch_size * len(latencies) / sum(latencies),
           "latency_ms": {"p50": p50, "p90": p90, "p99": p99},
           "iters": len(latencies), "warmup_calls": n, "first_call_s": first_call_s}
    row.update({k: measurement.get(k) for k in RESULT_KEYS})
    row["memory_check"] = measurement.get("memory_check")  # None on CPU
    row["reasons"] = {k: v for k, v in measurement["reasons"].items() if k in RESULT_KEYS}
    return row, measurement


def oom_row(batch_size, why=None):
    row = {"batch_size": batch_size, "oom": True, "images_per_s": None,
           "latency_ms": {"p50": None, "p90": None, "p99": None}}
    row.update({k: None for k in RESULT_KEYS})
    reason = "out of memory at this batch size" + (f": {why}" if why else "")
    row["reasons"] = {k: reason for k in ("images_per_s", *RESULT_KEYS)}
    return row


def is_host_out_of_memory(error):
    """Whether `error` is a failed host allocation (torch's CPU allocator raises a RuntimeError)."""
    return isinstance(error, MemoryError) or "can't allocate memory" in str(error) or \
        "DefaultCPUAllocator" in str(error)


def sweep_batch_sizes(batch_sizes, run_one, device):
    """Call run_one(batch_size) -> (row, measurement) for each size; an OOM becomes an oom row.

    Returns (rows, {batch_size: measurement}) in the order given.
    """
    rows, measurements = [], {}
    for b in batch_sizes:
        free_memory(device)
        oom = False
        why = None
        try:
            row, measurements[b] = run_one(b)
        except torch.cuda.OutOfMemoryError:
            oom = True  # handled outside `except`, once the traceback (and its tensors) is gone
        except (MemoryError, RuntimeError) as e:  # the host's allocator: "can't allocate memory"
            if not is_host_out_of_memory(e):
                raise
            oom, why = True, str(e).splitlines()[0][:160]
        if oom:
            free_memory(device, collect=True)
            row = oom_row(b, why)
            logger.info(f"  batch {b}: out of memory{f' ({why})' if why else ''}; going on")
        rows.append(row)
    free_memory(device)
    return rows, measurements
