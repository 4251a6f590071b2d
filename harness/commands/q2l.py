"""Query2Label (Liu et al., 2021): train as the authors' main_mlc.py, seeded and resumable.

    harness q2l train q2l-r101-448 --coco-root data/coco               # their recipe, 80 epochs
    torchrun --nproc_per_node 2 -m harness q2l train q2l-r101-448 --coco-root data/coco
    harness q2l train q2l-swinl-384 --coco-root data/coco --vram-budget 12GB
    harness q2l train q2l-r101-448 --coco-root SMOKE --smoke           # a minute on CPU, flagged smoke

Every training value is the authors' (their log, config_new.json, README; each recorded with its
source) unless a flag here overrides it (recorded as a deviation). The memory techniques keep the
maths. Selection `test` is theirs (best epoch chosen on val2014, the test set: flagged).
"""
import os
from pathlib import Path

from harness.commands import add_runs_argument
from harness.errors import UserError
from harness.manifest import get_spec
from harness.q2l.config import Q2LTrainConfig, check_flags
from harness.q2l.recipe import load_recipe
from harness.q2l.run import fit

SMOKE_DEFAULTS = {"epochs": 2, "batch_size": 8}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("train", help="train a Query2Label model on train2014 as the authors did, scored on val2014")
    p.add_argument("model", metavar="MODEL", help="a q2l-* model id (`harness models`)")
    p.add_argument("--coco-root", required=True, help="COCO 2014 root (annotations/, train2014/, val2014/)")
    add_runs_argument(p)
    p.add_argument("--epochs", type=int, help="default: the authors' (80); fewer is flagged smoke")
    p.add_argument("--batch-size", type=int, help="global batch over every process (default: the authors', "
                   "64 for R101-448); another value is recorded as a deviation")
    p.add_argument("--lr", type=float, help="OneCycleLR's max_lr (default: the authors', 1e-4); recorded")
    p.add_argument("--seed", type=int, default=0, help="seeds the initial weights, dropout, augmentation (recorded)")
    p.add_argument("--selection", choices=("test", "held-out"), default="test",
                   help="test: theirs (best epoch and early stop chosen on val2014, flagged 'selected on test'); "
                        "held-out: on a seeded part of train2014 (--holdout), then val2014 scored once")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction of train2014 (default 0.1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: cuda when available (--smoke: cpu)")
    p.add_argument("--amp", choices=["auto", "off", "fp16", "bf16"], default="auto",
                   help="autocast: auto is the authors' fp16 on a GPU and off on CPU (bf16 only if asked)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue after the last finished epoch (default: the newest unfinished run; 'auto': "
                        "that run if its settings are these, else a new run)")
    p.add_argument("--smoke", action="store_true", help="a tiny backbone of the same family on the smoke subset, "
                   "CPU, about a minute (2 epochs, batch 8 unless given); flagged smoke")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block in the backward (same bits, less memory)")
    p.add_argument("--micro-batch", type=int, metavar="N", help="forward/backward N images at a time, gradients "
                   "accumulated (Swin, R101 only: refused where batch statistics are used)")
    p.add_argument("--offload-ema", action="store_true", help="keep the EMA copy on the CPU (same bits)")
    p.add_argument("--offload-optimizer", action="store_true", help="keep AdamW's state on the CPU (same bits)")
    p.add_argument("--vram-budget", metavar="SIZE", help="e.g. 12GB: pick the exact techniques that fit (recorded)")
    p.add_argument("--backbone-weights", default="pretrained",
                   help="pretrained (their backbone.py's file, from the manifest), random, or a .pth file")
    p.add_argument("--weights-dir", help="folder of files placed by hand (backbone, config_new.json, training log)")
    p.add_argument("--workers", type=int, default=4, help="data-loading processes per training process")
    p.add_argument("--manifest", help="manifest file (default: weights_manifest.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    config = build_config(args)
    quiet = os.environ.get("RANK", "0") != "0"
    finished = fit(config, on_epoch=None if quiet else _print_epoch)
    if finished.record is not None:
        _print(finished)


def build_config(args):
    """The frozen config: flags checked first (one line each), then the authors' recipe, then the rest."""
    check_flags(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                micro_batch=args.micro_batch, workers=args.workers)
    if not (Path(args.coco_root) / "annotations").is_dir():
        raise UserError(f"--coco-root {args.coco_root}: no annotations/ folder there; pass the COCO 2014 root "
                        f"(`harness data coco --root DIR --download`, or `harness data smoke --out DIR`)")
    if args.smoke and args.backbone_weights not in ("pretrained", "random"):  # --smoke's tiny backbone is random
        raise UserError(f"--smoke trains a tiny backbone from random weights, so --backbone-weights "
                        f"{args.backbone_weights} would go unused; drop one of the two")
    spec = get_spec(args.model, args.manifest)
    recipe = load_recipe(spec, weights_dir=args.weights_dir, fetch_files=not args.smoke)
    defaults = SMOKE_DEFAULTS if args.smoke else {"epochs": recipe["epochs"], "batch_size": recipe["batch_size"]}
    return Q2LTrainConfig(
        model_id=spec.id, coco_root=args.coco_root, recipe=recipe,
        epochs=args.epochs or defaults["epochs"], batch_size=args.batch_size or defaults["batch_size"],
        lr=args.lr if args.lr is not None else recipe["lr"], seed=args.seed, selection=args.selection,
        holdout=args.holdout, smoke=args.smoke, amp=args.amp,
        backbone_weights="random" if args.smoke else args.backbone_weights,
        activation_checkpointing=args.activation_checkpointing, micro_batch=args.micro_batch,
        offload_ema=args.offload_ema, offload_optimizer=args.offload_optimizer, vram_budget=args.vram_budget,
        device=args.device or ("cpu" if args.smoke else None), workers=0 if args.smoke else args.workers,
        runs_root=args.runs, resume=args.resume, progress=not args.no_progress, weights_dir=args.weights_dir,
        manifest=args.manifest)


def _print_epoch(s):
    # epochs counted from 1 on the console, as the bar counts them (records keep their code's 0-based count)
    best = "n/a" if s["best_epoch"] < 0 else f"{s['best_mAP']:.2f} ({s['best_model']}, epoch {s['best_epoch'] + 1})"
    left = s["total_wall_s"] / (s["epoch"] + 1) * (s["epochs"] - s["epoch"] - 1)
    print(f"epoch {s['epoch'] + 1}/{s['epochs']}  loss {s['train_loss']:.3f}  mAP {_n(s['mAP'])}  EMA {_n(s['mAP_ema'])}"
          f"  best {best}  lr {s['lr_end']:.2e}  {_n(s['images_per_s'], '.1f')} img/s  ETA {left / 3600:.2f} h"
          + (f"  stopped: {s['stopped']}" if s["stopped"] else ""), flush=True)


def _print(finished):
    record = finished.record
    m, t = record.metrics, record.train
    flag = f"  SMOKE ({', '.join(record.smoke_reasons)}): never counts" if record.smoke else ""
    print(f"{record.model_id}: mAP {_n(m['mAP'])} on val2014 ({t['best_model']} model of epoch {t['best_epoch'] + 1}, "
          f"{t['selection_note'].split(' (')[0]}; paper {record.model['paper']['metrics'].get('mAP')}){flag}")
    print(f"record: {finished.run_dir / 'record.json'}")


def _n(value, spec=".2f"):
    return "n/a" if value is None else format(value, spec)
