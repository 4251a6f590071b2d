"""Measure what a model costs on synthetic input: parameters, GFLOPs, images/s, latency, peak
memory and energy per batch size, and the largest batch that fits a VRAM budget (inference and
one AdamW training step). Models get random weights: bench measures cost, never accuracy.
Writes one record of kind "bench" per model under --runs; `harness report` shows them."""
import dataclasses
import math
import sys

from tabulate import tabulate

from harness.commands import add_runs_argument
from harness.distributed import pick_device
from harness.errors import UserError
from harness.measure.bench import BenchConfig, CannotBuild, bench_model, models_to_run
from harness.measure.fit import parse_size_mib
from harness.measure.measurement import nvml_baseline_mib
from harness.measure.throughput import free_memory
from harness.progress import Eta, say
from harness.records import check_runs_root, environment, new_run_dir, write_record
from harness.report import COST_COLUMNS, bench_row, display_cost

MAX_SECONDS = 3600  # --warmup-s, --min-time-s
MAX_CALLS = 100_000  # --iters, --warmup, --max-fit-batch


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
    parser.add_argument("--warmup-s", type=float, default=None, metavar="S",
                        help="and at least this many seconds (default 2 GPU, 0 CPU)")
    parser.add_argument("--min-time-s", type=float, default=None, metavar="S",
                        help="timed calls last at least this long, for steady power and energy readings "
                             "(default 5 GPU, 0 CPU)")
    add_runs_argument(parser)
    parser.add_argument("--manifest", default=None, metavar="FILE", help="model manifest (default: weights_manifest.yaml)")


def _check_args(args):
    for name in ("iters", "max_fit_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if any(b < 1 for b in args.batch_size):
        raise UserError(f"batch sizes must be positive (got {args.batch_size}); e.g. --batch-size 1 16")
    if any(v is not None and v < 0 for v in (args.warmup, args.warmup_s, args.min_time_s)):
        raise UserError("--warmup, --warmup-s and --min-time-s cannot be negative")
    for name in ("warmup_s", "min_time_s"):  # nan passes every comparison; inf never ends
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value <= MAX_SECONDS):
            raise UserError(f"--{name.replace('_', '-')} {value} is not a number of seconds from 0 to {MAX_SECONDS:,} "
                            f"(an hour); e.g. --{name.replace('_', '-')} 5")
    for name in ("iters", "warmup", "max_fit_batch"):
        value = getattr(args, name)
        if value is not None and value > MAX_CALLS:
            raise UserError(f"--{name.replace('_', '-')} {value:,} is past the limit of {MAX_CALLS:,}; pass fewer")


def bench_config(args):
    return BenchConfig(batch_sizes=tuple(args.batch_size), amp=args.amp, channels_last=args.channels_last,
                       compile=args.compile, vram_budget=args.vram_budget, max_fit_batch=args.max_fit_batch,
                       iters=args.iters, warmup=args.warmup, warmup_s=args.warmup_s, min_time_s=args.min_time_s,
                       manifest=args.manifest)


def run(args):
    _check_args(args)

    parse_size_mib(args.vram_budget)  # a bad budget fails before any model is built
    config = bench_config(args)
    specs = models_to_run(args.model, args.manifest)
    device = pick_device(args.device)
    check_runs_root(args.runs)  # before minutes of measuring, not after

    baseline = nvml_baseline_mib(device)  # before this process allocates anything on the GPU
    env = environment()
    rows, skipped = [], []
    eta = Eta(len(specs))
    for k, spec in enumerate(specs):
        if len(specs) > 1:
            say(f"harness bench: model {k + 1} of {len(specs)}, {spec.id}" + (f" ({eta.line(k)})" if k else ""))
        try:
            record = bench_model(spec, device, config, baseline)
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
        run_dir = new_run_dir(args.runs, spec.id)
        record = dataclasses.replace(record, run_id=run_dir.name, environment=env)
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
