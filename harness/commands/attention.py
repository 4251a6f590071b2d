"""Query2Label's attention maps: per label, the last decoder layer's cross-attention over the image
(each head and their mean, the paper's Figure 5 layout), from the same forward pass as the scores.

Per image it writes into --out: <name>.attention.png (a row per label: the image, each head, the
mean, overlaid), <name>.attention.npy (float32, 80 labels x heads x H x W, every label; each head's
map sums to 1 over the H x W positions) and <name>.attention.json (labels, scores, weights).
Labels: --label (repeatable), else those scoring >= --threshold (the --top-k highest).
"""
import json
import sys
from pathlib import Path

import numpy as np

from harness.commands.predict import add_model_arguments, load
from harness.data.images import load_rgb
from harness.errors import UserError
from harness.explain.attention import (
    check_has_attention,
    figure_png,
    label_indices,
    scores_and_maps,
)
from harness.explain.predict import CLASS_NAMES, RANDOM_NOTE, image_paths, predicted
from harness.inputs.paths import what_it_is
from harness.manifest import get_spec
from harness.records import write_new


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument("--label", action="append", default=[], metavar="NAME",
                        help="COCO class to show (repeatable; default: the predicted ones)")
    parser.add_argument("--top-k", type=int, default=5, help="without --label: at most this many labels (5)")
    parser.add_argument("--out", default="attention", metavar="DIR", help="output folder (default: attention/)")


def _names(paths):
    """An output name per image: its stem, made unique where two images share one."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else f"{i:03d}-{s}" for i, s in enumerate(stems)]


def run(args):
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1 (got {args.top_k})")
    check_has_attention(get_spec(args.model, args.manifest))  # before any download
    chosen = label_indices(args.label, CLASS_NAMES)
    out = Path(args.out)
    kind = what_it_is(out)
    if kind not in ("a folder", "missing"):  # before the model is built: mkdir would fail after it
        raise UserError(f"--out {out} is {kind or 'a file'}, not a folder; pass a folder for the maps")
    names = _names(image_paths(args.images))
    taken = [out / f"{n}.attention.{ext}" for n in names for ext in ("png", "npy", "json")]
    if any(p.exists() for p in taken):
        raise UserError(f"{next(p for p in taken if p.exists())} exists; maps are never overwritten: "
                        f"pass another --out folder")
    spec, paths, model, info, device, amp_dtype = load(args)
    scores, maps = scores_and_maps(model, spec, paths, device=device, batch_size=args.batch_size, amp_dtype=amp_dtype)
    out.mkdir(parents=True, exist_ok=True)
    flag = f"  [{RANDOM_NOTE}]" if info["random_weights"] else ""
    for path, name, row, image_maps, picks in zip(paths, names, scores, maps,
                                                  predicted(scores, args.threshold, args.top_k)):
        columns = chosen or [c for c, _ in picks]
        if not columns:
            columns = [int(np.argmax(row))]
            print(f"{path}: no label >= {args.threshold:g}; showing the highest, {CLASS_NAMES[columns[0]]}",
                  file=sys.stderr)
        labels = [CLASS_NAMES[c] for c in columns]
        title = f"{spec.id} on {path.name}: last decoder layer cross-attention"
        png = figure_png(load_rgb(path), image_maps[columns], labels, row[columns], title,
                         random_weights=info["random_weights"])
        meta = {"image": str(path), "model": spec.id, "random_weights": info["random_weights"],
                "weights_sha256": info["sha256"], "classes": CLASS_NAMES, "scores": [float(v) for v in row],
                "shown": labels, "npy_layout": "labels (80, classes order) x heads x H x W; sums to 1 over H x W",
                "grid": list(image_maps.shape[-2:])}
        write_new(out / f"{name}.attention.npy", lambda f, m=image_maps: np.save(f, m.astype(np.float32)))
        write_new(out / f"{name}.attention.json", lambda f, m=meta: f.write((json.dumps(m, indent=1) + "\n").encode()))
        write_new(out / f"{name}.attention.png", lambda f, b=png: f.write(b))
        shown = ", ".join(f"{CLASS_NAMES[c]} {row[c]:.3f}" for c in columns)
        print(f"{path}: {out / name}.attention.png ({shown}){flag}")
