"""One MLSPL reproduction: train every grid point, pick by clean-val mAP, score test, write the record.

Modes as their train.py: `linear` (25 epochs on fixed features), `fine-tuned` (10 epochs end to
end from ImageNet V1), `linear-init` (a linear phase with fixed hyperparameters, then the
fine-tuning grid starting from its head and, for ROLE, its label estimates). Grid points are
compared in their order (batch 8 then 16, lr 1e-2 .. 1e-5); a later point must be strictly
better on val to win. Partial work lives under <runs>/_mlspl_work/ and a rerun of the same
command resumes it; the record goes to a new run folder.
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from harness import records
from harness.data.coco import labels_sha256
from harness.errors import UserError
from harness.mlspl import checks
from harness.mlspl import record as rec
from harness.mlspl.losses import LOSSES
from harness.mlspl.prepare import FULL_COUNTS, load_prepared
from harness.mlspl.authors_rng import record as draws_record
from harness.mlspl.train import (DATALOADER_SEMANTICS, EPOCHS, GRID_BATCH_SIZES, GRID_LRS, LINEAR_INIT, LR_MULT, SEED,
                                 scored_rows, train_fine_tuned, train_linear_group)

MODES = ("linear", "fine-tuned", "linear-init")
RESOLUTION = 448


def model_id(loss, mode):
    return f"mlspl-{loss.lower()}-{mode}"


def paper_grid():
    return [(bs, lr) for bs in GRID_BATCH_SIZES for lr in GRID_LRS]


def select(results):
    """The first point whose best val mAP no later point beats strictly (their selection)."""
    best = None
    for r in results:
        if best is None or r.val_map > best.val_map:
            best = r
    return best


def _load_features(features_dir, data):
    import torch

    from harness.mlspl.features import feature_meta, feature_paths

    arrays = {split: np.load(path, mmap_mode="r") for split, path in feature_paths(features_dir).items()}
    out = {}
    for name, split in data.items():
        feats = arrays[split.source]
        if len(feats) != (len(data["test"].images) if split.source == "val" else len(data["train"].images) +
                          len(data["val"].images)):
            raise UserError(f"{features_dir}: {split.source} features have {len(feats)} rows, not one per "
                            f"formatted_{split.source}_images.npy row; extract them from this --data")
        out[name] = torch.from_numpy(np.ascontiguousarray(feats[split.rows], dtype=np.float32))
    meta = feature_meta(features_dir)
    return out, {"dir": str(Path(features_dir).resolve()), "source": "extracted here" if meta else "other (authors')",
                 "extraction": meta}


def _observed(loss, split):
    # BCE is the full-label upper bound: their 'clean' train set variant.
    return split.labels if loss == "BCE" else split.labels_obs


def _work_dir(runs_root, mid, settings):
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(runs_root) / "_mlspl_work" / f"{mid}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "settings.json").write_text(json.dumps(settings, indent=1) + "\n")
    return path


def _say(enabled, total):
    """A line per epoch: N/total, val mAP per grid point, and the time left at this pace."""
    import time

    start, first = time.perf_counter(), []

    def progress(epoch, val_maps):
        if not enabled:
            return
        if not first:  # a resumed run starts past epoch 1
            first.append(epoch)
        done = epoch - first[0] + 1  # epochs count from 0
        left = (time.perf_counter() - start) / done * (total - epoch - 1)
        print(f"  epoch {epoch + 1}/{total}: val mAP " + " ".join(f"{m:.2f}" for m in val_maps) +
              f" (ETA {left / 60:.1f} min)", flush=True)
    return progress


def _linear(data, feats, loss, points, epochs, seed, device, work, tag, progress, semantics):
    """Linear grid on features: one batched run per batch size, in grid order."""
    import torch

    train = (feats["train"], torch.as_tensor(_observed(loss, data["train"]), dtype=torch.float32))
    val, test = (feats["val"], data["val"].labels), (feats["test"], data["test"].labels)
    by_point = {}
    for bs in dict.fromkeys(bs for bs, _ in points):
        lrs = [lr for b, lr in points if b == bs]
        print(f"{tag}: linear, batch size {bs}, lr {', '.join(map(str, lrs))}", flush=True)
        results = train_linear_group(train, val, test, loss, lrs, bs, epochs=epochs, seed=seed, device=device,
                                     state_path=work / f"{tag}_bs{bs}.pt", progress=_say(progress, epochs),
                                     semantics=semantics)
        by_point.update({(bs, r.lr): r for r in results})
    return [by_point[p] for p in points]


def _fine_tune(data, loss, points, epochs, seed, device, work, coco_root, resolution, random_weights, workers,
               max_steps, head, estimates, progress, semantics):
    from harness.mlspl.features import load_imagenet_v1
    from harness.models import build_from_arch

    results, best = [], None
    weights_info = None
    for bs, lr in points:
        print(f"fine-tune: batch size {bs}, lr {lr}", flush=True)
        model = build_from_arch({"name": "mlspl_resnet50", "num_classes": data["train"].labels.shape[1]})
        if not random_weights:
            weights_info = load_imagenet_v1(model)
        r = train_fine_tuned(model, data, loss, lr, bs, coco_root=coco_root, epochs=epochs, seed=seed, device=device,
                             resolution=resolution, workers=workers, head=head, estimates=estimates,
                             state_dir=_point_dir(work, bs, lr), max_steps=max_steps, progress=_say(progress, epochs),
                             semantics=semantics)
        best = select([best, r] if best else [r])
        if r is not best:  # keep one full model in memory, not one per point
            r.head = r.table = r.test_scores = None
        results.append(r)
    return results, weights_info


def _point_dir(work, bs, lr):
    path = work / f"fine_tune_bs{bs}_lr{lr:g}"
    path.mkdir(exist_ok=True)
    return path


def train_and_evaluate(data_dir, loss, mode, *, features_dir=None, coco_root=None, points=None, runs_root="runs",
                       device=None, seed=SEED, epochs=None, resolution=RESOLUTION, random_weights=False, workers=4,
                       max_steps=None, init_point=None, progress=True, semantics=DATALOADER_SEMANTICS):
    """Run one (loss, mode) reproduction and return its run folder."""
    import torch

    from harness.evaluate import pick_device

    if loss not in LOSSES:
        raise UserError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}")
    if mode not in MODES:
        raise UserError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    if mode in ("linear", "linear-init") and not features_dir:
        raise UserError(f"mode {mode} trains on features; pass --features DIR")
    if mode in ("fine-tuned", "linear-init") and not coco_root:
        raise UserError(f"mode {mode} trains on images; pass --coco-root DIR")
    init_given, grid_given = init_point is not None, bool(points)
    if mode == "linear-init":
        init_point = init_point or LINEAR_INIT.get(loss)
        if init_point is None:
            raise UserError(f"the authors fixed the linear phase of linear-init only for "
                            f"{' and '.join(LINEAR_INIT)}; pass --init-lr and --init-batch-size for {loss}")
    elif init_given:
        raise UserError(f"--init-lr and --init-batch-size set the linear phase of mode linear-init; "
                        f"leave them out for mode {mode}")
    points = points or paper_grid()
    paper_epochs = EPOCHS["linear" if mode == "linear" else "fine-tuned"]
    epochs = paper_epochs if epochs is None else epochs
    _check_numbers(points, init_point, epochs, paper_epochs, resolution, workers, seed)
    device = pick_device(device)
    torch.manual_seed(seed)  # their code seeded numpy only; torch is seeded here too, and recorded
    np.random.seed(seed)  # as their np.random.seed(P['seed']); training itself draws from torch only

    data = load_prepared(data_dir)
    _check_batch_sizes(data, points, grid_given, init_point, init_given)
    prep = json.loads((Path(data_dir) / "mlspl_prepare.json").read_text()) \
        if (Path(data_dir) / "mlspl_prepare.json").is_file() else {}
    mid = model_id(loss, mode)
    settings = {"model_id": mid, "data": prep.get("sha256") or str(Path(data_dir).resolve()), "points": points,
                "epochs": epochs, "seed": seed, "resolution": resolution, "random_weights": random_weights,
                "max_steps": max_steps, "init_point": init_point, "features": str(features_dir),
                "semantics": semantics}
    work = _work_dir(runs_root, mid, settings)
    started, t0 = records.utc_now(), time.perf_counter()

    from harness.measure.measurement import SpanMeasurement
    from harness.measure.measurement import nvml_baseline_mib

    baseline_mib = nvml_baseline_mib(device)  # before features or a model reach the GPU
    with SpanMeasurement(device, baseline_mib=baseline_mib) as measurement:
        feats, features_info, linear_phase, weights_info = None, None, None, None
        if features_dir:
            feats, features_info = _load_features(features_dir, data)
            feats = {k: v.to(device) for k, v in feats.items()}
        if mode == "linear":
            results = _linear(data, feats, loss, points, epochs, seed, device, work, "linear", progress, semantics)
        else:
            head = estimates = None
            if mode == "linear-init":
                init_bs, init_lr = init_point[1], init_point[0]
                (linear_phase,) = _linear(data, feats, loss, [(init_bs, init_lr)], EPOCHS["linear"], seed, device,
                                          work, "linear_phase", progress, semantics)
                head = linear_phase.head
                estimates = torch.sigmoid(linear_phase.table) if linear_phase.table is not None else None
            results, weights_info = _fine_tune(data, loss, points, epochs, seed, device, work, coco_root, resolution,
                                               random_weights, workers, max_steps, head, estimates, progress,
                                               semantics)
    best = select(results)
    wall = time.perf_counter() - t0
    measured = _training_measurement(measurement.result())

    run_dir = records.new_run_dir(runs_root, mid)
    test = data["test"]
    n_scored = len(best.test_scores)
    labels = test.labels[:n_scored].astype(np.uint8)  # their test loader drops the last partial batch
    records.save_arrays(run_dir, best.test_scores.astype(np.float32), labels, test.image_ids[:n_scored])
    ckpt_paths = rec.save_checkpoints(run_dir, best, data["train"].rows)
    reasons = _smoke_reasons(prep, data, features_info, random_weights, epochs, paper_epochs, points, resolution,
                             max_steps, loss, init_point)
    record = _record(run_dir, mid, loss, mode, data, prep, best, results, linear_phase, points, epochs, seed,
                     device, resolution, features_info, weights_info, ckpt_paths, random_weights, n_scored, labels,
                     wall, started, reasons, coco_root or data_dir, init_point, measured, semantics)
    records.write_record(run_dir, record)
    return run_dir


def _check_numbers(points, init_point, epochs, paper_epochs, resolution, workers, seed):
    """Each number the user can set, before anything is loaded or trained."""
    checks.whole("--epochs", epochs, fix=f"leave --epochs out for the paper's {paper_epochs}")
    checks.whole("--resolution", resolution)
    checks.whole("--workers", workers, minimum=0)
    checks.seed(seed)
    for bs, lr in points:
        checks.whole("--batch-size", bs)
        checks.positive("--lr", lr)
    if init_point is not None:
        checks.whole("--init-batch-size", init_point[1])
        checks.positive("--init-lr", init_point[0])


def _check_batch_sizes(data, points, grid_given, init_point, init_given):
    """No batch may be larger than a split: train, val and test loaders all drop their last partial batch."""
    sizes = {name: len(split.images) for name, split in data.items()}
    flag, fix = ("--batch-size", "use --batch-size N with N") if grid_given else \
        ("the paper's grid batch size", "train one point with --lr and --batch-size N (flags the run smoke), N")
    for bs in sorted({bs for bs, _ in points}):
        checks.batch_fits(flag, bs, sizes, fix)
    if init_point is not None:
        flag, fix = ("--init-batch-size", "use --init-batch-size N with N") if init_given else \
            ("the authors' linear-phase batch size", "pass --init-lr and --init-batch-size N (flags the run smoke), N")
        checks.batch_fits(flag, init_point[1], sizes, fix)


def _smoke_reasons(prep, data, features_info, random_weights, epochs, paper_epochs, points, resolution, max_steps,
                   loss=None, init_point=None):
    reasons = []
    extraction = (features_info or {}).get("extraction") or {}
    if random_weights or extraction.get("random_weights"):
        reasons.append("random weights")
    if prep.get("smoke_subset"):
        reasons.append("smoke subset")
    counts = {k: len(v.images) for k, v in data.items()}
    if counts != FULL_COUNTS:
        reasons.append(f"not the full COCO 2014 ({counts['train']}/{counts['val']}/{counts['test']} images)")
    if epochs != paper_epochs:
        reasons.append(f"{epochs} epochs, not {paper_epochs}")
    if sorted(points) != sorted(paper_grid()):
        reasons.append("not the paper's grid: " + ", ".join(f"bs {b} lr {lr:g}" for b, lr in points))
    if resolution != RESOLUTION:
        reasons.append(f"resolution {resolution}, not {RESOLUTION}")
    if extraction and extraction.get("resolution") != RESOLUTION:
        reasons.append(f"features at resolution {extraction.get('resolution')}, not {RESOLUTION}")
    if max_steps:
        reasons.append(f"at most {max_steps} steps per epoch")
    fixed = LINEAR_INIT.get(loss)
    if init_point is not None and tuple(init_point) != fixed:  # only linear-init has a linear phase
        authors = f"not the authors' lr {fixed[0]:g} bs {fixed[1]}" if fixed else f"the authors fixed none for {loss}"
        reasons.append(f"linear phase lr {init_point[0]:g} bs {init_point[1]}, {authors}")
    return reasons


def _model_entry(mid):
    from harness.manifest import get_spec

    try:
        spec = get_spec(mid)
        return {"id": mid, "family": spec.family, "arch": spec.arch, "paper": spec.paper}
    except UserError:  # a loss and mode without a manifest entry (e.g. BCE linear-init)
        return {"id": mid, "family": "mlspl", "arch": {"name": "mlspl_resnet50", "num_classes": 80}, "paper": {}}


def _training_measurement(measured):
    """SpanMeasurement's figures for a whole training (every grid point, epoch, val and test pass)."""
    measured["notes"].append("spans the whole training of this session: every grid point and epoch, with the "
                             "val and test scoring (a resumed training measures only what this session ran)")
    measured["reasons"]["images_per_s"] = "a training over a grid has no single images/s (see timings.wall_s)"
    measured["reasons"]["energy_j_per_image"] = "energy is for the whole training: see energy_j"
    return measured


def _record(run_dir, mid, loss, mode, data, prep, best, results, linear_phase, points, epochs, seed, device,
            resolution, features_info, weights_info, ckpt_paths, random_weights, n_scored, labels, wall, started,
            reasons, root, init_point, measured, semantics):
    from harness.data.categories import COCO_CATEGORIES

    names = [name for _, name, _ in COCO_CATEGORIES] if labels.shape[1] == 80 else None
    return {
        "schema": 1,
        "kind": "train",
        "run_id": run_dir.name,
        "model": _model_entry(mid),
        "checkpoint": rec.checkpoint_info(ckpt_paths, random_weights),
        "dataset": {
            "name": "coco2014-val", "root": str(Path(root).resolve()), "image_set": "annotated",
            "n_images": n_scored, "n_images_total": len(data["test"].images),
            "fingerprint": {"annotations_sha256": (prep.get("annotations_sha256") or {}).get("val"),
                            "n_images": n_scored, "labels_sha256": labels_sha256(data["test"].image_ids[:n_scored], labels)},
            "smoke_subset": bool(prep.get("smoke_subset")),
        },
        "eval": {"protocol": "mlspl", "resolution": resolution, "resize": "squish", "normalize": "imagenet",
                 "batch_size": best.batch_size, "dtype": "float32", "amp": False, "device": device, "limit": None,
                 "drop_last": True},
        "metrics": rec.compute_test_metrics(best.test_scores, labels, names),
        "train": {
            "loss": loss, "mode": mode, "epochs": epochs, "optimizer": "Adam (no weight decay, no schedule)",
            "label_estimator_lr_mult": LR_MULT if loss == "ROLE" else None, "expected_positives_k": 2.9,
            "seeds": {"torch": seed, "numpy": seed, "single_positives": prep.get("seed", 1200),
                      "split": prep.get("seed", 1200)},
            "random_draws": draws_record(semantics),
            "counts": {"train": len(data["train"].images), "val": len(data["val"].images),
                       "val_scored": scored_rows(len(data["val"].images), best.batch_size),
                       "test": len(data["test"].images), "test_scored": n_scored},
            "selected": {"batch_size": best.batch_size, "lr": best.lr, "best_epoch": best.best_epoch,
                         "val_mAP": best.val_map, "test_mAP": best.test_map},
            "grid": [r.summary() for r in results],
            "linear_phase": None if linear_phase is None else {**linear_phase.summary(), "fixed_point": init_point},
            "features": features_info, "backbone_weights": weights_info,
            "checkpoints": ckpt_paths,
        },
        "timings": {"wall_s": wall, "images_per_s": None},
        "measurement": measured,
        "environment": records.environment(),
        "started_at": started,
        "finished_at": records.utc_now(),
        "smoke": bool(reasons),
        "smoke_reasons": reasons,
        "files": {"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy"},
    }
