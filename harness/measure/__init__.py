"""Measuring what a model costs: GPU memory, time and energy (NVML), host memory, FLOPs.

    nvml.py         NvmlSampler: a 10 ms background sampler of one GPU, picked by UUID
    host.py         peak RSS of this process (stdlib)
    measurement.py  EvalMeasurement: the context manager filling record["measurement"]
    throughput.py   model-only timing on synthetic input; batch-size sweep that survives OOM
    fit.py          largest batch within a VRAM budget, for inference and a training step
    cost.py         parameter count and GFLOPs
    consistency.py  whether NVML's and PyTorch's peaks agree

Names are imported lazily: importing one module does not pull in the others (or torch).
"""
import importlib

_EXPORTS = {
    "EvalMeasurement": "measurement", "NvmlSampler": "nvml", "time_model": "throughput",
    "sweep_batch_sizes": "throughput", "find_fits": "fit", "parse_size_mib": "fit",
    "count_params": "cost", "count_gflops": "cost", "check_memory": "consistency",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"harness.measure.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'harness.measure' has no attribute {name!r}")
