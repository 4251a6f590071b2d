"""Measuring what a model costs: GPU memory, time and energy (NVML), host memory, FLOPs.

    nvml.py         NvmlSampler: a 10 ms background sampler of one GPU, picked by UUID
    host.py         peak RSS of this process (stdlib)
    measurement.py  SpanMeasurement: time, memory and energy of a span of work (an evaluation,
                    a training, timed calls), as a record's `measurement`
    throughput.py   model-only timing on synthetic input; batch-size sweep that survives OOM
    fit.py          largest batch within a VRAM budget, for inference and a training step
    cost.py         parameter count and GFLOPs
    consistency.py  whether NVML's and PyTorch's peaks agree
    bench.py        `harness bench`: all of the above for one model, as a bench record

Import from the modules themselves: none pulls in torch until it is used.
"""
