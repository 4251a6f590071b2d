"""Scores of one model on your own images, through exactly `harness eval`'s path.

The model comes from evaluate's builder (released, cached, `--weights FILE` or `random`), the
images through the model's own eval transform, the batches through the same fp32 sigmoid: the
same images with the same weights and batch size give `harness eval`'s scores to the last bit.
"""
import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from harness import progress
from harness.checkpoints import load_state_dict_strict, sha256_of
from harness.data.categories import COCO_CATEGORIES
from harness.data.dataset import ImageFiles
from harness.data.images import IMAGE_SUFFIXES
from harness.data.transforms import eval_transform
from harness.distributed import pick_device
from harness.errors import UserError
from harness.eval.config import EvalConfig
from harness.eval.run import _build_model, _choose_amp
from harness.inputs.paths import what_it_is
from harness.measure.throughput import AMP_DTYPES
from harness.mlspl.features import load_imagenet_v1
from harness.mlspl.record import CLASSIFIER
from harness.models import build_from_arch
from harness.records import read_record

CLASS_NAMES = [name for _, name, _ in COCO_CATEGORIES]
RANDOM_NOTE = "RANDOM WEIGHTS: not a trained model, these scores mean nothing"


def image_paths(items):
    """Files as given, folders as their images (sorted by name, not recursive)."""
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"{item} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder of "
                                f"images or the image files themselves")
            paths += found
        elif what_it_is(item) is None:
            paths.append(item)
        elif what_it_is(item) == "missing":
            raise UserError(f"{item}: no such file or folder; pass image files or folders of images")
        else:  # a FIFO, a device: never opened (a FIFO would block)
            raise UserError(f"{item} is {what_it_is(item)}, not an image file; pass image files or folders of images")
    return paths


def load_model(spec, weights=None, *, weights_dir=None, config=None, trust=False, device=None, amp=None):
    """(model, weights info, device, autocast dtype or None), chosen as `harness eval` chooses them."""
    if spec.family == "ctran":  # its forward needs a label-state mask: not wired here yet
        raise UserError(f"{spec.id} (C-Tran) is not covered here; score it with `harness eval {spec.id} --weights "
                        f"RUN/best.safetensors --known 0 25 50 75`")
    device = pick_device(device)
    if amp not in (None, "off") and device != "cuda":
        raise UserError("--amp needs a CUDA GPU; drop --amp to run in fp32 on CPU")
    with progress.step(f"{spec.id}: building the model ({'random weights' if weights == 'random' else 'its weights'})"):
        if spec.family == "mlspl" and weights and Path(weights).is_dir():
            model, info = mlspl_run_model(spec, Path(weights), device)
        else:  # random weights: seed 0, as `harness eval --weights random`, so all three show the same model
            asked = EvalConfig(coco_root="", weights=weights, weights_dir=weights_dir, checkpoint_config=config,
                               trust_checkpoint=trust)
            model, info = _build_model(spec, asked, device)
    amp, _ = _choose_amp(spec, amp, info.get("config"), device)

    return model, info, device, AMP_DTYPES.get(amp)


def mlspl_run_model(spec, run_dir, device):
    """An MLSPL model trained here, from its run folder: classifier.safetensors holds the head (linear
    training, on torchvision's fixed ImageNet V1 ResNet-50) or the whole network (fine-tuned)."""
    record = read_record(run_dir)
    if record.model_id != spec.id:
        raise UserError(f"--weights {run_dir} is a run of {record.model_id}, not {spec.id}; pass that model id")
    path = run_dir / CLASSIFIER
    if not path.is_file():
        raise UserError(f"{run_dir} has no {CLASSIFIER}; pass the folder of a finished `harness mlspl train` run")
    state = load_file(str(path))
    model = build_from_arch({**spec.arch, "linear_only": False})
    if not any(k.startswith("backbone.") for k in state):  # linear: the backbone is the fixed V1 network
        load_imagenet_v1(model)
        state = {**{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}, **state}
    load_state_dict_strict(model, state, source=str(path))
    info = {"path": str(path), "sha256": sha256_of(path), "pinned": False, "run": str(run_dir),
            "random_weights": bool(record.checkpoint.get("random_weights"))}
    return model.eval().to(device), info


def score_images(model, spec, paths, *, device, batch_size=None, amp_dtype=None):
    """images x classes float32 sigmoid scores, batch by batch as `harness eval` computes them."""
    batch_size = batch_size or spec.eval.batch_size
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
    loader = torch.utils.data.DataLoader(ImageFiles(paths, eval_transform(spec.eval)), batch_size=batch_size,
                                         shuffle=False, num_workers=0, pin_memory=device == "cuda")
    parts = []
    with torch.inference_mode():
        for images, _ in progress.bar(len(loader), f"{spec.id}: scoring", iterable=loader, unit="batch",
                                      leave=False) if len(loader) > 1 else loader:
            images = images.to(device, non_blocking=True)
            with torch.autocast(device_type=device, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images).float()
            if not bool(torch.isfinite(logits).all()):
                raise UserError(f"{spec.id} returned NaN or inf scores; check the checkpoint, or run without --amp")
            parts.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(parts)


def predicted(scores, threshold=0.5, top_k=10):
    """Per image, [(class index, score)] above threshold, highest first, at most top_k."""
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")
        out.append([(int(c), float(row[c])) for c in order[:top_k] if row[c] >= threshold])
    return out


def weights_text(info):
    if info["random_weights"]:
        return RANDOM_NOTE
    return f"weights sha256 {info['sha256'][:12]}" + (f" ({info['unverified']})" if info.get("unverified") else "")


def render(fmt, model_id, paths, scores, info, threshold, top_k):
    """The predictions as text (a line per image), JSON or CSV (a row per image)."""
    picks = predicted(scores, threshold, top_k)
    note = weights_text(info)
    if fmt == "text":
        lines = []
        for path, pick, row in zip(paths, picks, scores):
            found = ", ".join(f"{CLASS_NAMES[c]} {s:.3f}" for c, s in pick)
            if not found:
                best = int(np.argmax(row))
                found = f"nothing >= {threshold:g} (highest: {CLASS_NAMES[best]} {row[best]:.3f})"
            lines.append(f"{path}: {found}" + (f"  [{RANDOM_NOTE}]" if info["random_weights"] else ""))
        return "\n".join(lines) + "\n"
    if fmt == "json":
        images = [{"image": str(path), "random_weights": info["random_weights"],
                   "predicted": [{"label": CLASS_NAMES[c], "score": s} for c, s in pick],
                   "scores": [float(v) for v in row]} for path, pick, row in zip(paths, picks, scores)]
        return json.dumps({"model": model_id, "weights": note, "random_weights": info["random_weights"],
                           "weights_sha256": info["sha256"], "threshold": threshold, "top_k": top_k,
                           "classes": CLASS_NAMES, "images": images}, indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "model", "weights", "predicted", *CLASS_NAMES])
    for path, pick, row in zip(paths, picks, scores):
        writer.writerow([str(path), model_id, note, ";".join(CLASS_NAMES[c] for c, _ in pick),
                         *(repr(float(v)) for v in row)])
    return buffer.getvalue()
