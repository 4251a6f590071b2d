"""Measure what a model costs on synthetic input: parameters, GFLOPs, images/s, latency, peak
memory and energy per batch size, and the largest batch that fits a VRAM budget (inference and
one AdamW training step). Models get random weights: bench measures cost, never accuracy.
Writes one record of kind "bench" per model under --out; `harness report` shows them."""
import json
import sys
import time

from harness.errors import UserError

DEFAULTS = {"cuda": {"iters": 50, "warmup": 10, "warmup_s": 2.0, "min_time_s": 5.0},
            "cpu": {"iters": 5, "warmup": 1, "warmup_s": 0.0, "min_time_s": 0.0}}
BENCH_FAMILIES = ("q2l", "asl", "mldecoder", "mlspl", "ctran")


def add_arguments(parser):
    parser.add_argument("model", help="a model id from `harness models`, or 'all' (every Q2L, ASL and ML-Decoder "
                                      "model and the MLSPL ResNet-50, one per architecture)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="default: cuda when a GPU is visible, else cpu")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 16], metavar="N",
                        help="batch sizes to time (default: 1 16)")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast dtype (default: fp32)")
    parser.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    parser.add_argument("--compile", action="store_true", help="time torch.compile(model)")
    parser.add_argument("--vram-budget", default="12GB", metavar="SIZE",
                        help="find the largest batch within this much GPU memory (default: 12GB, "
                             "an RTX 3060; GB = GiB as on the box; 'none' skips the search)")
    parser.add_argument("--max-fit-batch", type=int, default=256, metavar="N",
                        help="largest batch the fit search tries (default 256)")
    parser.add_argument("--iters", type=int, default=None, metavar="N", help="timed calls per batch size (default 50 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N", help="warm-up calls (default 10 GPU, 1 CPU)")
    parser.add_argument("--warmup-s", type=float, default=None, metavar="S", help="and at least this many seconds (default 2 GPU, 0 CPU)")
    parser.add_argument("--min-time-s", type=float, default=None, metavar="S",
                        help="timed calls last at least this long, for steady power and energy readings "
                             "(default 5 GPU, 0 CPU)")
    parser.add_argument("--out", default="runs", metavar="DIR", help="runs folder (default: runs/)")
    parser.add_argument("--manifest", default=None, metavar="FILE", help="model manifest (default: weights_manifest.yaml)")


class CannotBuild(Exception):
    """The model has no builder here (or needs a package that is missing)."""


def _check_args(args):
    for name in ("iters", "max_fit_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if any(b < 1 for b in args.batch_size):
        raise UserError(f"batch sizes must be positive (got {args.batch_size}); e.g. --batch-size 1 16")
    if any(v is not None and v < 0 for v in (args.warmup, args.warmup_s, args.min_time_s)):
        raise UserError("--warmup, --warmup-s and --min-time-s cannot be negative")


def _check_writable(folder):
    import os
    from pathlib import Path

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {folder}: cannot create it ({e.strerror}); pass a folder you can write to")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--out {folder}: not writable; pass a folder you can write to")


def models_to_run(name, manifest=None):
    """[spec]: one model, or for 'all' one entry per distinct architecture of the benched families."""
    from harness.manifest import get_spec, load_manifest

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
    import torch

    if device == "cuda":
        from harness.measure.measurement import cuda_uuid

        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "index": index, "name": props.name, "uuid": cuda_uuid(device),
                "memory_total_mib": props.total_memory // 2**20,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark}
    from harness.records import cpu_name

    return {"type": "cpu", "name": cpu_name(), "threads": torch.get_num_threads()}


def _stage_printer(model_id):
    """Prints each stage of a bench as it starts, with the seconds since the first."""
    start = time.perf_counter()

    def say(stage):
        print(f"{model_id}: {stage} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return say


def bench_model(spec, device, args, settings, baseline_mib):
    """Build `spec` with random weights and measure it; return the bench record (not yet written)."""
    import torch

    from harness.measure.cost import count_gflops, count_params
    from harness.measure.fit import find_fits, parse_size_mib
    from harness.measure.throughput import sweep_batch_sizes, time_model
    from harness.models import create_model

    from harness.records import utc_now

    started = utc_now()
    resolution = spec.eval.resolution
    say = _stage_printer(spec.id)
    say("building the model (random weights)")
    try:
        model = create_model(spec.id, manifest=args.manifest).eval()
    except (KeyError, ImportError) as e:  # no builder yet, or a missing optional package
        raise CannotBuild(str(e)) from None
    if spec.family == "ctran":  # its forward takes a label mask too: regular inference, every label unknown
        from harness.models.ctran import AllUnknown
        model = AllUnknown(model)
    params = count_params(model)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    say("counting GFLOPs")
    gflops, gflops_why = count_gflops(model, resolution, device)

    def one(batch_size):
        runner = model
        if args.compile:  # a fresh compile per batch size: no recompile limit, no dynamic shapes
            torch._dynamo.reset()
            runner = torch.compile(model, dynamic=False)
        return time_model(runner, batch_size, resolution, device, iters=settings["iters"],
                          warmup=max(settings["warmup"], 1 if args.compile else 0), warmup_s=settings["warmup_s"],
                          min_time_s=settings["min_time_s"],
                          amp=args.amp, channels_last=args.channels_last, baseline_mib=baseline_mib)

    t = time.perf_counter()
    say(f"timing batch sizes {', '.join(map(str, args.batch_size))}")
    rows, measurements = sweep_batch_sizes(args.batch_size, one, device)
    sweep_s = time.perf_counter() - t
    say(f"searching the largest batch that fits in {args.vram_budget}")
    fits = find_fits(model, resolution, device, parse_size_mib(args.vram_budget), amp=args.amp,
                     channels_last=args.channels_last, max_batch=args.max_fit_batch, baseline_mib=baseline_mib)
    if args.compile and device == "cuda":
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
    return {
        "schema": 1,
        "kind": "bench",
        "model": {"id": spec.id, "family": spec.family, "arch": spec.arch, "paper": spec.paper},
        "checkpoint": {"path": None, "sha256": None, "pinned": False, "random_weights": True},
        "bench": {
            "resolution": resolution,
            "params": params,
            "gflops": gflops,
            "flops_convention": "FLOPs = 2 x multiply-adds (torch FlopCounterMode), batch 1, fp32",
            "device": _device_info(device),
            "options": {"amp": args.amp or False, "channels_last": args.channels_last, "compile": args.compile},
            "input": "synthetic: torch.randn(batch, 3, resolution, resolution)",
            **settings,
            "sweep_s": sweep_s,
            "results": rows,
            "fits": fits,
            "reasons": reasons,
            "notes": notes,
        },
        "measurement": measurement,
        "started_at": started,
        "finished_at": utc_now(),
        "smoke": True,
        "smoke_reasons": ["random weights"],
    }


def run(args):
    _check_args(args)
    from harness.measure.fit import parse_size_mib

    parse_size_mib(args.vram_budget)  # a bad budget fails before any model is built
    specs = models_to_run(args.model, args.manifest)
    from harness.evaluate import pick_device

    device = pick_device(args.device)
    _check_writable(args.out)  # before minutes of measuring, not after

    from tabulate import tabulate

    from harness.measure.measurement import nvml_baseline_mib
    from harness.report import COST_COLUMNS, bench_row, display_cost
    from harness.measure.throughput import free_memory
    from harness.records import environment, new_run_dir, write_record

    settings = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in DEFAULTS[device].items()}
    baseline = nvml_baseline_mib(device)  # before this process allocates anything on the GPU
    env = environment()
    rows, skipped = [], []
    for spec in specs:
        try:
            record = bench_model(spec, device, args, settings, baseline)
        except CannotBuild as e:
            if args.model != "all":
                raise UserError(f"cannot build {spec.id}: {e}; see `harness models` for what it needs")
            skipped.append(f"{spec.id} (cannot build it: {e})")
            print(f"harness bench: skipped {spec.id}: cannot build it ({e})", file=sys.stderr)
            continue
        except Exception as e:  # one model's failure (a cuDNN error, a compile failure) must not stop the others
            if args.model != "all":
                raise
            skipped.append(f"{spec.id} (failed: {type(e).__name__}: {e})")
            print(f"harness bench: {spec.id} failed, going on: {type(e).__name__}: {e}", file=sys.stderr)
            free_memory(device, collect=True)
            continue
        free_memory(device, collect=True)  # the model is gone: give its memory back before the next
        record["environment"] = env
        run_dir = new_run_dir(args.out, spec.id)
        record["run_id"] = run_dir.name
        write_record(run_dir, record)
        print(f"{spec.id}: wrote {run_dir}/record.json", flush=True)
        cells = display_cost(bench_row(spec, record))
        rows.append({header: cells[key] for key, header in COST_COLUMNS})
    if not rows:
        raise UserError(f"no model was measured: {'; '.join(skipped)}; see `harness models`")
    print()
    print(tabulate(rows, headers="keys", disable_numparse=True))
    if skipped:
        print(f"\nnot measured: {'; '.join(skipped)}")
    if device == "cpu":
        print("\nCPU run: GPU memory, energy and the VRAM fit are null in the records (no GPU); "
              "peak RSS is host memory.")
    return 0
