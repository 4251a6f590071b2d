"""Labels of your own images: the model's own eval transform and scoring, exactly as `harness eval`.

Prints per image the COCO labels scoring >= --threshold (at most --top-k, highest first), or writes
JSON / CSV (every score of every image). `--weights random` runs untrained weights: every line says so.
"""
import sys
from pathlib import Path

from harness.errors import UserError
from harness.explain.predict import image_paths, load_model, render, score_images
from harness.inputs.paths import check_input_file, check_new_file
from harness.manifest import get_spec
from harness.records import write_new


def add_model_arguments(parser):
    """The options that choose a model and its weights, shared with `harness attention`."""
    parser.add_argument("model", help="model id from `harness models`")
    parser.add_argument("images", nargs="+", metavar="IMAGE|FOLDER", help="image files, or folders of images")
    parser.add_argument("--weights", help="checkpoint file, or 'random' (default: the cached/downloaded release)")
    parser.add_argument("--config", help="the model's config_new.json (Q2L; default: beside the checkpoint)")
    parser.add_argument("--weights-dir", help="folder of checkpoints placed by hand")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow unpickling beyond plain tensors, only for a file whose sha256 is pinned")
    parser.add_argument("--threshold", type=float, default=0.5, help="a label is predicted at score >= this (0.5)")
    parser.add_argument("--batch-size", type=int, help="default: the paper's (manifest), as `harness eval`")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default (auto): cuda when available")
    parser.add_argument("--amp", nargs="?", const="fp16", choices=["fp16", "bf16", "off"],
                        help="autocast (GPU only); default as `harness eval` chooses")
    parser.add_argument("--manifest", help="manifest file (default: weights_manifest.yaml)")


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=int, default=10, help="at most this many labels per image (10)")
    parser.add_argument("--format", choices=("text", "json", "csv"), default="text",
                        help="text: one line per image (default); json, csv: every class's score too")
    parser.add_argument("--out", metavar="FILE", help="write here (never replaces a file) instead of printing")


def load(args):
    """(spec, image paths, model, weights info, device, autocast dtype) from the shared options."""
    if not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold must be between 0 and 1 (got {args.threshold}); scores are probabilities")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size}); leave it out for the paper's")
    if args.weights not in (None, "random") and not Path(args.weights).is_dir():  # a folder: an MLSPL run
        check_input_file(args.weights, "--weights", "pass a checkpoint file, or 'random'")
    if args.config is not None:
        check_input_file(args.config, "--config", "pass the model's config_new.json")
    spec = get_spec(args.model, args.manifest)
    paths = image_paths(args.images)
    model, info, device, amp_dtype = load_model(spec, args.weights, weights_dir=args.weights_dir, config=args.config,
                                                trust=args.trust_checkpoint, device=args.device, amp=args.amp)
    return spec, paths, model, info, device, amp_dtype


def run(args):
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1 (got {args.top_k})")
    if args.out is not None:
        check_new_file(args.out, "--out")  # before the model is built, not after
    spec, paths, model, info, device, amp_dtype = load(args)
    scores = score_images(model, spec, paths, device=device, batch_size=args.batch_size, amp_dtype=amp_dtype)
    text = render(args.format, spec.id, paths, scores, info, args.threshold, args.top_k)
    if args.out is None:
        sys.stdout.write(text)
        return
    try:
        write_new(args.out, lambda f: f.write(text.encode()))
    except FileExistsError:
        raise UserError(f"--out {args.out} exists; results are never overwritten: pass another file name")
    print(f"written: {args.out}", file=sys.stderr)
