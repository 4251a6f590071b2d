"""C-Tran (Lanchantin et al., CVPR 2021): train as the authors' main.py (label-mask training), resumable.

Evaluation at 0/25/50/75% known labels is `harness eval ctran-r101-576 --weights RUN/best.safetensors
--known 0 25 50 75`: one record per setting, each under its manifest entry.
"""
from pathlib import Path

from harness.commands import add_runs_argument
from harness.ctran.config import CtranEvalConfig, CtranTrainConfig
from harness.ctran.masks import DRAWS, KNOWN_PERCENTS
from harness.ctran.run import evaluate_checkpoint, train
from harness.errors import UserError
from harness.manifest import load_manifest


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("train", help="train C-Tran on train2014, then score val2014 with the selected checkpoint")
    p.add_argument("--coco-root", required=True, help="COCO 2014 root (annotations/, train2014/, val2014/)")
    p.add_argument("--no-lmt", action="store_true", help="the ablation without label-mask training")
    p.add_argument("--selection", choices=("test", "held-out"), default="test",
                   help="test: the authors' protocol (LR schedule and checkpoint chosen on val2014, flagged "
                        "'selected on test'); held-out: on a seeded part of train2014 (--holdout)")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction of train2014 (default 0.1)")
    p.add_argument("--epochs", type=int, default=100, help="epochs (default 100, theirs)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch, split over torchrun's processes (default "
                   "16, theirs)")
    p.add_argument("--lr", type=float, default=1e-5, help="Adam's learning rate (default 1e-5, theirs)")
    p.add_argument("--seed", type=int, default=0, help="seeds masks, crops, flips, dropout, shuffle (recorded)")
    p.add_argument("--backbone", default="imagenet",
                   help="imagenet (torchvision's ResNet-101 V1, as their pretrained=True), a .pth file, or random")
    p.add_argument("--tiny", action="store_true", help="a one-block ResNet-10 backbone: smoke runs only")
    p.add_argument("--scale", type=int, default=640, help="squish size before the crop (smoke runs: smaller)")
    p.add_argument("--crop", type=int, default=576, help="crop / model input size")
    p.add_argument("--limit", type=int, help="only the first N training and validation images (flagged smoke)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--workers", type=int, default=4,
                   help="image loader workers (default 4): the crops and flips are drawn inside them, so their "
                        "number changes the training's draws (the same number repeats a run on any machine)")
    add_runs_argument(p)
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue after the last finished epoch (default: the newest unfinished run; "
                        "'auto': that run if its settings are these, else a new run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    config = CtranTrainConfig(coco_root=args.coco_root, use_lmt=not args.no_lmt, selection=args.selection,
                              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              scale=args.scale, crop=args.crop, tiny=args.tiny, backbone=args.backbone,
                              holdout=args.holdout, limit=args.limit, device=args.device, workers=args.workers,
                              runs_root=args.runs, resume=args.resume, progress=not args.no_progress)
    finished = train(config)
    if finished.record is not None:  # under torchrun only rank 0 has one
        _print(finished.record, finished.run_dir)


def _print(record, run_dir):
    m = record.metrics
    flag = f"  SMOKE ({', '.join(record.smoke_reasons)}): never counts" if record.smoke else ""
    sel = record.ctran.get("selection")
    mAP = "n/a" if m["mAP"] is None else f"{m['mAP']:.2f}"
    print(f"{record.model_id}: mAP {mAP} at {record.eval['known_percent']}% known "
          f"(paper {record.model['paper']['metrics'].get('mAP')}; {sel and 'selected on ' + sel}){flag}")
    print(f"record: {run_dir / 'record.json'}")


def evaluate(args, spec):
    """`harness eval` for a C-Tran entry: --known picks the sibling entries (same training, that setting)."""
    known = args.known if args.known else [spec.train["known"]]
    bad = [k for k in known if k not in KNOWN_PERCENTS]
    if bad:
        raise UserError(f"--known must be 0, 25, 50 or 75 (got {bad[0]}): the percentages the paper reports")
    if args.amp not in (None, "off"):
        raise UserError("C-Tran evaluates in fp32, as the authors' code; drop --amp")
    if args.resume:
        raise UserError("a C-Tran evaluation is not resumable (one pass per setting); run it without --resume")
    if args.draw not in DRAWS:
        raise UserError(f"--draw must be ctran or ctran-id (got {args.draw})")
    if not args.weights or args.weights == "random":
        raise UserError("C-Tran has no released weights: pass --weights RUN/best.safetensors from "
                        "`harness ctran train` (or the authors' best_model.pt)")
    siblings = {s.train["known"]: s.id for s in load_manifest(args.manifest).values()
                if s.family == "ctran" and s.train["use_lmt"] == spec.train["use_lmt"]}
    missing = [k for k in known if k not in siblings]
    if missing:
        raise UserError(f"no manifest entry for {spec.id.replace('-known', '')} at {missing[0]}% known "
                        f"(the paper reports {', '.join(map(str, sorted(siblings)))}); pick one of those")
    batch_size = spec.eval.batch_size if args.batch_size is None else args.batch_size
    config = CtranEvalConfig(weights=args.weights, coco_root=args.coco_root,
                             model_ids=tuple(siblings[k] for k in known), known_percents=tuple(known),
                             draw=args.draw, device=args.device, workers=args.workers, batch_size=batch_size,
                             runs_root=args.runs, manifest=args.manifest, limit=args.limit,
                             progress=not args.no_progress)
    records = evaluate_checkpoint(config)

    for r in records:
        _print(r, Path(args.runs) / r.model_id / r.run_id)
