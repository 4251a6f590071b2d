"""Evaluate models on COCO val2014, each with its own transform, image set and metric protocol.

Writes a run folder per model (record.json, scores.npy, labels.npy, image_ids.npy) under --runs.
Several models of one resolution are scored from one decode of the images.
`--weights random` runs the real pipeline on random weights: the record is flagged smoke.
"""



from pathlib import Path

from harness.commands import add_runs_argument
from harness.commands.ctran import evaluate as evaluate_ctran
from harness.distributed import World
from harness.errors import UserError
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate_many
from harness.inputs.paths import check_input_file, what_it_is
from harness.manifest import get_spec
from harness.metrics import OUTSIDE_CI_NOTE, outside_ci
from harness.pretrained import check_weights_file
from harness.records import SETTINGS, check_runs_root


def add_arguments(parser):
    parser.add_argument("models", nargs="+", metavar="MODEL", help="model id(s) from `harness models`")
    parser.add_argument("--coco-root", required=True, help="COCO 2014 root (annotations/, val2014/)")
    parser.add_argument("--weights", help="checkpoint file, or 'random' (default: the cached/downloaded release)")
    parser.add_argument("--config", help="the model's config_new.json (Q2L; default: beside the checkpoint)")
    parser.add_argument("--weights-dir", help="folder of checkpoints placed by hand")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow unpickling beyond plain tensors, only for a file whose sha256 is pinned")
    parser.add_argument("--batch-size", type=int, help="at least 1; default: the authors' config_new.json batch_size (their "
                        "q2l_infer.py applied it), else the manifest's; another value is recorded as a deviation")
    parser.add_argument("--amp", nargs="?", const="fp16", choices=["fp16", "bf16", "off"],
                        help="autocast (GPU only; recorded). Default: as the authors' config_new.json "
                             "says (their inference used fp16 autocast when its amp was set), else fp32")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default (auto): cuda when available")
    parser.add_argument("--limit", type=int, help="only the first N images (the run is flagged smoke)")
    parser.add_argument("--workers", type=int, help="data-loading processes (default: every core this process may use)")
    add_runs_argument(parser)
    parser.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                        help="continue an interrupted run (default: this model's newest unfinished one)")
    parser.add_argument("--manifest", help="manifest file (default: weights_manifest.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0; recorded)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--known", type=int, nargs="+", metavar="PERCENT",
                        help="C-Tran: labels known at inference, any of 0 25 50 75 (one record each)")
    parser.add_argument("--draw", default="ctran", help="C-Tran: which labels are known: ctran (theirs: seeded by "
                        "the image tensor's sha1) or ctran-id (seeded by image id; another protocol)")
    parser.add_argument("--tf32", choices=["on", "off"], default="off",
                        help="TF32 matmuls and convolutions on a GPU (default off: the float32 reference; the "
                             "authors' torch 1.9 had matmul TF32 on); recorded")
    parser.add_argument("--keep-cache", action="store_true",
                        help="keep the uint8 cache of resized images (under RUNS/.decode-cache) for a later run")


def check_paths(args):
    """Every file and folder named, before the labels are read or a model is built (minutes on COCO)."""
    if args.weights not in (None, "random"):
        check_weights_file(args.weights)
    if args.config is not None:
        check_input_file(args.config, "--config", "pass the model's config_new.json")
    for flag, folder in (("--coco-root", args.coco_root), ("--weights-dir", args.weights_dir)):
        kind = what_it_is(folder) if folder else "a folder"
        if kind == "missing" and flag == "--weights-dir":  # a missing COCO root: its own line says how to get it
            raise UserError(f"{flag} {folder}: no such folder; pass a folder")
        if kind not in ("a folder", "missing"):
            raise UserError(f"{flag} {folder} is {kind or 'a file'}, not a folder; pass a folder")
    if args.resume not in (None, "latest", "auto") and not (Path(args.resume) / SETTINGS).is_file():
        raise UserError(f"--resume {args.resume} is not a run folder (no {SETTINGS} in it); pass the run folder an "
                        f"interrupted eval named, or --resume alone for the model's newest")
    check_runs_root(args.runs)


def run(args):
    check_paths(args)
    specs = [get_spec(model, args.manifest) for model in args.models]
    ctran = [spec for spec in specs if spec.family == "ctran"]
    if ctran:  # trained here, partial labels: harness/commands/ctran.py
        if len(specs) > 1:
            raise UserError(f"{ctran[0].id} is a C-Tran model: evaluate it alone (`harness eval {ctran[0].id} ...`)")
        args.model = specs[0].id
        return evaluate_ctran(args, specs[0])
    if args.known or args.draw != "ctran":
        raise UserError(f"--known and --draw are for C-Tran models only; {specs[0].id} is {specs[0].family}")
    config = eval_config(args)
    quiet_rank = not World.declared().main  # torchrun: rank 0 says the results (and any failure, once)
    try:
        results = evaluate_many(specs, config)
    except UserError:
        if quiet_rank:
            return 2
        raise
    failed = [spec.id for spec, result in zip(specs, results) if isinstance(result, BaseException)]
    if quiet_rank:
        return 2 if failed else 0
    for spec, result in zip(specs, results):
        if not isinstance(result, BaseException):
            _print_result(spec, *result)
    if failed:  # each failure was said in one line as it happened
        print(f"{len(failed)} of {len(specs)} models failed: {', '.join(failed)}")
        return 2


def eval_config(args):
    return EvalConfig(coco_root=args.coco_root, weights=args.weights, weights_dir=args.weights_dir,
                      checkpoint_config=args.config, trust_checkpoint=args.trust_checkpoint,
                      batch_size=args.batch_size, amp=args.amp, device=args.device, tf32=args.tf32, limit=args.limit,
                      workers=args.workers, seed=args.seed, runs_root=args.runs, resume=args.resume,
                      keep_cache=args.keep_cache, progress=not args.no_progress)


def _print_result(spec, run_dir, record):
    m = record.metrics
    ci = m.get("mAP_ci95")
    ci_text = f"{_number(ci[0])}-{_number(ci[1])}" if ci else "n/a"
    speed = record.timings["images_per_s"]
    flag = f"  SMOKE ({', '.join(record.smoke_reasons)}): never counts" if record.smoke else ""
    print(f"{spec.id}: mAP {_number(m['mAP'])} (95% CI {ci_text}; paper {spec.paper_map}) "
          f"on {record.dataset['n_images']} images, {_number(speed, '.1f')} img/s{flag}")
    if outside_ci(m["mAP"], ci):
        print(f"note: {OUTSIDE_CI_NOTE}")
    print(f"record: {run_dir / 'record.json'}")


def _number(value, spec=".2f"):
    """A figure, or n/a where the record holds none (no CI asked, no positives, speed not measured)."""
    return "n/a" if value is None else format(value, spec)
