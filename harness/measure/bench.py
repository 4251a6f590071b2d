"""`harness bench`: what a model costs on synthetic input: parameters, GFLOPs, images/s, latency,
peak memory and energy per batch size, and the largest batch that fits a VRAM budget (inference
and one AdamW training step). Models get random weights: a bench measures cost, never accuracy."""
import dataclasses
import json
import logging
import time
from dataclasses import dataclass

import torch

from harness import progress
from harness.manifest import get_spec, load_manifest
from harness.measure.cost import count_gflops, count_params
from harness.measure.fit import find_fits, parse_size_mib
from harness.measure.measurement import cuda_uuid
from harness.measure.throughput import (
    SyntheticInput,
    Timing,
    sweep_batch_sizes,
    time_model,
)
from harness.models import create_model
from harness.records import Record, config_section, cpu_name, model_section, utc_now

logger = logging.getLogger(__name__)

DEFAULTS = {"cuda": {"iters": 50, "warmup": 10, "warmup_s": 2.0, "min_time_s": 5.0},
            "cpu": {"iters": 5, "warmup": 1, "warmup_s": 0.0, "min_time_s": 0.0}}
BENCH_FAMILIES = ("q2l", "asl", "mldecoder", "mlspl", "ctran")


@dataclass(frozen=True)
class BenchConfig:
    """What a bench is asked to do; None timing fields take the device's DEFAULTS."""
    batch_sizes: tuple = (1, 16)
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    vram_budget: str = "12GB"
    max_fit_batch: int = 256
    iters: int | None = None
    warmup: int | None = None
    warmup_s: float | None = None
    min_time_s: float | None = None
    manifest: str | None = None

    def timing(self, device):
        """The Timing on this device: what was asked, else the device's defaults."""
        return Timing(**{k: v if getattr(self, k) is None else getattr(self, k) for k, v in DEFAULTS[device].items()})


class AllUnknown(torch.nn.Module):
    """C-Tran at regular inference, images only (every label unknown): for cost measurements. Here, not
    in harness/models/ctran.py, so that measuring any other model does not import torchvision."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        mask = torch.full((images.shape[0], self.model.num_labels), -1.0, device=images.device)
        return self.model(images, mask)


class CannotBuild(Exception):
    """The model needs a package that is missing."""


def models_to_run(name, manifest=None):
    """[spec]: one model, or for 'all' one entry per distinct architecture of the benched families."""
    if name != "all":
        return [get_spec(name, manifest)]
    seen, specs = set(), []
    for spec in load_manifest(manifest).values():
        key = json.dumps([spec.arch, spec.eval.resolution], sort_keys=True)
        if spec.family in BENCH_FAMILIES and key not in seen:
            seen.add(key)
            specs.append(spec)
    return specs


def _device_info(device):
    """The device and the backend flags that change its speed (TF32, cuDNN autotuning)."""
    if device == "cuda":
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "index": index, "name": props.name, "uuid": cuda_uuid(device),
                "memory_total_mib": props.total_memory // 2**20,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark}

    return {"type": "cpu", "name": cpu_name(), "threads": torch.get_num_threads()}


def _stage_printer(model_id):
    """Says each stage of a bench as it starts, with the time since the first."""
    start = progress.clock()

    def say(stage):
        logger.info(f"{model_id}: {stage} (at {progress.duration(progress.clock() - start)})")
    return say


def bench_model(spec, device, config, baseline_mib):
    """Build `spec` with random weights and measure it as `config` (a BenchConfig) asks; return its
    Record (not yet written: no run id)."""
    started = utc_now()
    resolution = spec.eval.resolution
    inputs = SyntheticInput(resolution, config.amp, config.channels_last)
    timing = config.timing(device)
    say = _stage_printer(spec.id)
    say("building the model (random weights)")
    try:
        model = create_model(spec.id, manifest=config.manifest).eval()
    except ImportError as e:  # a missing optional package
        raise CannotBuild(str(e)) from None
    if spec.family == "ctran":  # its forward takes a label mask too: regular inference, every label unknown
        model = AllUnknown(model)
    params = count_params(model)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    say("counting GFLOPs")
    gflops, gflops_why = count_gflops(model, resolution, device)

    def one(batch_size):
        runner = model
        compiled = timing
        if config.compile:  # a fresh compile per batch size: no recompile limit, no dynamic shapes
            torch._dynamo.reset()
            runner = torch.compile(model, dynamic=False)
            compiled = dataclasses.replace(timing, warmup=max(timing.warmup, 1))
        return time_model(runner, batch_size, device, inputs, compiled, baseline_mib=baseline_mib)

    t = time.perf_counter()
    say(f"timing batch sizes {', '.join(map(str, config.batch_sizes))}")
    rows, measurements = sweep_batch_sizes(config.batch_sizes, one, device)
    sweep_s = time.perf_counter() - t
    say(f"searching the largest batch that fits in {config.vram_budget}")
    fits = find_fits(model, device, parse_size_mib(config.vram_budget), inputs, max_batch=config.max_fit_batch,
                     baseline_mib=baseline_mib)
    if config.compile and device == "cuda":
        fits.setdefault("notes", []).append("the fit search runs the model eagerly (without torch.compile)")

    chosen = spec.eval.batch_size if spec.eval.batch_size in measurements else max(measurements, default=None)
    if chosen is None:
        measurement = {"batch_size": None, "reasons": {"measurement": "every batch size ran out of memory"}}
    else:
        measurement = {"batch_size": chosen, **measurements[chosen]}
    reasons = {"gflops": gflops_why} if gflops_why else {}
    notes = ["train fit: every parameter trained (full fine-tuning), the costliest mode"]
    if spec.family == "ctran":
        notes.append("C-Tran with every label unknown (regular inference); params include torchvision's unused "
                     "fc (2.05 M), kept for the authors' checkpoint keys")
    if spec.family == "q2l":
        notes.append("transformer sizes as the manifest assumes; `harness eval` builds them from the released "
                     "checkpoint, which may differ (its record says so)")
    return Record(
        kind="bench", model=model_section(spec), config=config_section(config),
        checkpoint={"path": None, "sha256": None, "pinned": False, "random_weights": True},
        bench={
            "resolution": resolution,
            "params": params,
            "gflops": gflops,
            "flops_convention": "FLOPs = 2 x multiply-adds (torch FlopCounterMode), batch 1, fp32",
            "device": _device_info(device),
            "options": {"amp": config.amp or False, "channels_last": config.channels_last, "compile": config.compile},
            "input": "synthetic: torch.randn(batch, 3, resolution, resolution)",
            **dataclasses.asdict(timing),
            "sweep_s": sweep_s,
            "results": rows,
            "fits": fits,
            "reasons": reasons,
            "notes": notes,
        },
        measurement=measurement, started_at=started, finished_at=utc_now(), smoke_reasons=["random weights"])


