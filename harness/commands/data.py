"""Prepare data: check (and download) the COCO 2014 layout, or write the synthetic smoke subset.

  harness data coco --root DIR [--download]   check DIR/annotations + DIR/val2014 (and fetch what is missing)
  harness data smoke --out DIR [--images N]   write the synthetic COCO-format smoke subset
"""
from pathlib import Path

from harness.data.coco import check_images, is_full_split, load_labels, unreadable_images
from harness.data.smoke import make_smoke
from harness.download import fetch_coco
from harness.errors import UserError

MAX_SMOKE_IMAGES = 10_000
SMOKE_S_PER_IMAGE, SMOKE_KB_PER_IMAGE = 0.025, 28  # measured: 500 images in 12 s, 14 MB


def add_arguments(parser):
    sub = parser.add_subparsers(dest="data_command", metavar="WHAT", required=True)
    coco = sub.add_parser("coco", help="Check the COCO 2014 layout under --root (and download what is missing).")
    coco.add_argument("--coco-root", "--root", dest="root", required=True,
                      help="COCO root holding annotations/, val2014/ (and train2014/); --root is the old spelling")
    coco.add_argument("--download", action="store_true", help="fetch and unpack what is missing (needs internet)")
    coco.add_argument("--splits", nargs="+", default=["val2014"], choices=["val2014", "train2014"],
                      help="image folders to check or fetch (default: val2014; MLSPL also needs train2014)")
    coco.add_argument("--verify-images", action="store_true",
                      help="also decode every image to find truncated or empty files (reads every file: ~6 GB)")
    smoke = sub.add_parser("smoke", help="Write the synthetic COCO-format smoke subset.")
    smoke.add_argument("--out", required=True, help="folder to write (must be empty or missing)")
    smoke.add_argument("--images", type=int, default=48, help="val2014 images (default 48)")
    smoke.add_argument("--train-images", type=int, default=96, help="train2014 images (default 96; 0 for none)")
    smoke.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")


def run(args):
    return _coco(args) if args.data_command == "coco" else _smoke(args)


def _smoke(args):
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new --out folder (nothing was overwritten)")
    if args.images < 1 or args.train_images < 0:
        raise UserError("--images must be >= 1 and --train-images >= 0")
    total = args.images + args.train_images
    if total > MAX_SMOKE_IMAGES:  # ids are drawn below 600,000: far fewer than that, or the draw never ends
        raise UserError(f"--images {args.images:,} and --train-images {args.train_images:,} are {total:,} synthetic "
                        f"images, about {total * SMOKE_S_PER_IMAGE / 3600:,.1f} h and {total * SMOKE_KB_PER_IMAGE / 1e6:,.1f} "
                        f"GB; the limit is {MAX_SMOKE_IMAGES:,} (a smoke test needs a few dozen): pass fewer")
    make_smoke(out, n_val=args.images, n_train=args.train_images, seed=args.seed)
    print(f"smoke subset: {args.images} val2014 + {args.train_images} train2014 images under {out} "
          f"(synthetic: results on it never count as a reproduction)")


def _coco(args):
    if args.download:
        fetch_coco(args.root, splits=("annotations", *args.splits))
    for split in args.splits:
        labels = load_labels(args.root, split, "all")
        check_images(args.root, labels)
        if args.verify_images:
            bad = unreadable_images(args.root, labels)
            if bad:
                listed = "; ".join(f"{name}: {why}" for name, why in bad[:10]) + (
                    f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
                raise UserError(f"{len(bad)} {split} image(s) cannot be decoded: {listed}; delete them and run "
                                f"`harness data coco --root {args.root} --download` to get them again")
        annotated = int((labels.labels.sum(1) > 0).sum())
        note = "the full COCO split" if is_full_split(labels) else "NOT the full COCO split: runs on it are flagged smoke"
        decoded = ", every one decodes" if args.verify_images else ""
        print(f"{split}: {len(labels)} images ({annotated} annotated), {len(labels.category_ids)} categories, "
              f"all present{decoded} ({note})")
