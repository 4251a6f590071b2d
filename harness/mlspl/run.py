"""One MLSPL reproduction: train every grid point, pick by clean-val mAP, score test, write the record.

Modes as their train.py: `linear` (25 epochs on fixed features), `fine-tuned` (10 epochs end to
end from ImageNet V1), `linear-init` (a linear phase with fixed hyperparameters, then the
fine-tuning grid starting from its head and, for ROLE, its label estimates). Grid points are
compared in their order (batch 8 then 16, lr 1e-2 .. 1e-5); a later point must be strictly
better on val to win. Partial work lives under <runs>/_mlspl_work/ and a rerun of the same
command resumes it (its settings.json, the run's TrainConfig, must agree field by field); the
record goes to a new run folder. Under torchrun, fine-tuning runs on every process
(harness/mlspl/ddp.py) and rank 0 writes the files.
"""
import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from harness import progress, records
from harness.data.categories import COCO_CATEGORIES
from harness.data.coco import labels_sha256
from harness.distributed import World, pick_device, refuse_another_world
from harness.errors import Interrupted, UserError
from harness.files import write_atomically
from harness.manifest import get_spec
from harness.measure.measurement import SpanMeasurement, nvml_baseline_mib
from harness.mlspl import checks
from harness.mlspl import record as rec
from harness.mlspl.authors_rng import record as draws_record
from harness.mlspl.config import RESOLUTION, differences
from harness.mlspl.features import feature_meta, feature_paths, load_imagenet_v1
from harness.mlspl.losses import LOSSES
from harness.mlspl.prepare import FULL_COUNTS, load_prepared
from harness.mlspl.train import (
    EPOCHS,
    GRID_BATCH_SIZES,
    GRID_LRS,
    LINEAR_INIT,
    LR_MULT,
    PointResult,
    scored_rows,
    train_fine_tuned,
    train_linear_group,
)
from harness.models import build_from_arch
from harness.records.arrays import load_array
from harness.records.curves import copy_curves

logger = logging.getLogger(__name__)

MODES = ("linear", "fine-tuned", "linear-init")


@dataclass
class Trained:
    """What a run's training gave: every grid point, the one selected, and what it started from."""
    grid: list
    best: PointResult
    linear_phase: PointResult | None  # linear-init only
    features: dict | None  # where the features came from
    backbone_weights: dict | None  # the ImageNet file fine-tuning started from
    wall_s: float
    measurement: dict


@dataclass
class RunContext:
    """Where and on what the run ran: its folder, model id, prepared data, when it began."""
    run_dir: Path
    model_id: str
    data: dict
    prep: dict  # mlspl_prepare.json ({} when absent)
    started: str
    checkpoints: dict
    distributed: dict | None  # torchrun's ranks, None on one process


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
    arrays = {split: load_array(path, f"{split} features", ndim=2, kinds="f", mmap_mode="r")
              for split, path in feature_paths(features_dir).items()}
    out = {}
    for name, split in data.items():
        feats = arrays[split.source]
        if len(feats) != (len(data["test"].images) if split.source == "val" else len(data["train"].images) +
                          len(data["val"].images)):
            raise UserError(f"{features_dir}: {split.source} features have {len(feats)} rows, not one per "
                            f"formatted_{split.source}_images.npy row; extract them from this --data")
        out[name] = torch.from_numpy(np.ascontiguousarray(feats[split.rows], dtype=np.float32))
        _check_finite(out[name], split, feature_paths(features_dir)[split.source])
    meta = feature_meta(features_dir)
    return out, {"dir": str(Path(features_dir).resolve()), "source": "extracted here" if meta else "other (authors')",
                 "extraction": meta}


def _check_finite(feats, split, path):
    """Features with a NaN or an infinity would train a NaN head whose mAP still reads as a number."""
    bad = (~feats.isfinite()).any(dim=1).nonzero()
    if len(bad):
        row = int(split.rows[int(bad[0])])  # the file's row, as the user can look it up
        raise UserError(f"{path}: row {row} holds a non-finite value (NaN or infinity; {len(bad)} such rows are "
                        f"used here); extract the features again (`harness mlspl extract-features`)")


def _observed(loss, split):
    # BCE is the full-label upper bound: their 'clean' train set variant.
    return split.labels if loss == "BCE" else split.labels_obs


def _work_dir(config, mid, data_id, processes=1):
    """The run's work folder: keyed by what its numbers depend on (the key of earlier versions), with
    the whole TrainConfig in settings.json, which a resumed run must match field by field, and the
    number of torchrun processes, which it must repeat."""
    key_settings = {"model_id": mid, "data": data_id, "points": config.points, "epochs": config.epochs,
                    "seed": config.seed, "resolution": config.resolution, "random_weights": config.random_weights,
                    "max_steps": config.max_steps, "init_point": config.init_point,
                    "features": str(config.features_dir), "semantics": config.semantics}
    key = hashlib.sha256(json.dumps(key_settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(config.runs_root) / "_mlspl_work" / f"{mid}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    settings_file = path / "settings.json"
    if settings_file.is_file():
        changed = differences(records.read_settings(settings_file), config)
        if config.mode == "linear":  # no images are loaded: the worker count changes nothing
            changed = [c for c in changed if not c.startswith("workers ")]
        if changed:
            raise UserError(f"{path} holds a run started with other settings ({'; '.join(changed)}); "
                            f"repeat its settings to resume it, or delete that folder")
        refuse_another_world(path, records.read_settings(settings_file), {"processes": processes})
    write_atomically(settings_file, json.dumps({**config.as_json(), **key_settings, "processes": processes},
                                               indent=1) + "\n")
    return path


def _say(enabled, total):
    """A line per epoch: N/total, val mAP per grid point, and the time left at this pace."""
    start, first = progress.clock(), []

    def say(epoch, val_maps):
        if not enabled:
            return
        if not first:  # a resumed run starts past epoch 1
            first.append(epoch)
        done = epoch - first[0] + 1  # epochs count from 0
        left = (progress.clock() - start) / done * (total - epoch - 1)
        logger.info(f"  epoch {epoch + 1}/{total}: val mAP " + " ".join(f"{m:.2f}" for m in val_maps) +
                    f" (ETA {progress.duration(left)} for this grid point)")
    return say


def _linear(data, feats, config, work, tag):
    """Linear grid on features: one batched run per batch size, in grid order."""
    train = (feats["train"], torch.as_tensor(_observed(config.loss, data["train"]), dtype=torch.float32))
    val, test = (feats["val"], data["val"].labels), (feats["test"], data["test"].labels)
    by_point = {}
    for bs in dict.fromkeys(bs for bs, _ in config.points):
        lrs = [lr for b, lr in config.points if b == bs]
        logger.info(f"{tag}: linear, batch size {bs}, lr {', '.join(map(str, lrs))}")
        results = train_linear_group(train, val, test, config, bs, lrs, state_path=work / f"{tag}_bs{bs}.pt",
                                     on_epoch=_say(config.progress, config.epochs), curves=(work, tag))
        by_point.update({(bs, r.lr): r for r in results})
    return [by_point[p] for p in config.points]


def _fine_tune(data, config, work, start, world):
    """The fine-tuning grid; `start`: the linear phase (linear-init) or None. Returns (points, weights file)."""
    results, best = [], None
    weights_info = None
    for bs, lr in config.points:
        if world.main:
            logger.info(f"fine-tune: batch size {bs}, lr {lr}")
        model = build_from_arch({"name": "mlspl_resnet50", "num_classes": data["train"].labels.shape[1]})
        if not config.random_weights:
            weights_info = load_imagenet_v1(model)
        r = train_fine_tuned(model, data, config, (bs, lr), start=start, state_dir=_point_dir(work, bs, lr),
                             on_epoch=_say(config.progress and world.main, config.epochs), world=world,
                             curves_dir=work)
        best = select([best, r] if best else [r])
        if r is not best:  # keep one full model in memory, not one per point
            r.head = r.table = r.test_scores = None
        results.append(r)
    return results, weights_info


def _point_dir(work, bs, lr):
    path = work / f"fine_tune_bs{bs}_lr{lr:g}"
    path.mkdir(exist_ok=True)
    return path


def train_and_evaluate(config):
    """Run one (loss, mode) reproduction (a TrainConfig); its FinishedRun (None on ranks other than 0)."""
    asked = config
    config = _resolved(config)
    world = World.from_env(config.device)
    if world.size > 1 and config.mode == "linear":
        raise UserError("mode linear trains on features in one process; run it without torchrun")
    torch.manual_seed(config.seed)  # their code seeded numpy only; torch is seeded here too, and recorded
    np.random.seed(config.seed)  # as their np.random.seed(P['seed']); training itself draws from torch only

    data, prep, work = world.every_rank(lambda: _prepared(config, asked, world))  # a refusal stops every rank
    mid = model_id(config.loss, config.mode)
    started, t0 = records.utc_now(), time.perf_counter()

    baseline_mib = nvml_baseline_mib(config.device)  # before features or a model reach the GPU
    try:
        with SpanMeasurement(config.device, baseline_mib=baseline_mib) as measurement:
            results, linear_phase, features_info, weights_info = _train(data, config, work, world)
    except KeyboardInterrupt:
        raise Interrupted([f"{mid}: every finished epoch is kept in {work}"], resume=()) from None
    trained = Trained(results, select(results), linear_phase, features_info, weights_info,
                      time.perf_counter() - t0, _training_measurement(measurement.result()))
    ranks = world.gather(world.describe(config.device))
    # rank 0 writes; the others wait for it (a refusal there reaches them) instead of in the final barrier
    return world.main_only(lambda: _write_run(config, data, prep, trained, work, started, ranks, world))


def _prepared(config, asked, world):
    """(prepared data, mlspl_prepare.json, the work folder), checked before any training."""
    records.check_runs_root(config.runs_root)
    if config.features_dir:
        feature_paths(config.features_dir)  # both files there, before the work folder is made
    data = load_prepared(config.data_dir)
    _check_batch_sizes(data, config, asked)
    prep_file = Path(config.data_dir) / "mlspl_prepare.json"
    prep = json.loads(prep_file.read_text()) if prep_file.is_file() else {}
    mid = model_id(config.loss, config.mode)
    return data, prep, _work_dir(config, mid, prep.get("sha256") or str(Path(config.data_dir).resolve()), world.size)


def _write_run(config, data, prep, trained, work, started, ranks, world):
    """The run folder of a finished training: test scores, checkpoints, curves, the record."""
    mid = model_id(config.loss, config.mode)
    run_dir = records.new_run_dir(config.runs_root, mid)
    test, n_scored = data["test"], len(trained.best.test_scores)
    labels = test.labels[:n_scored].astype(np.uint8)  # their test loader drops the last partial batch
    digests = records.save_arrays(run_dir, trained.best.test_scores.astype(np.float32), labels,
                                  test.image_ids[:n_scored])
    checkpoints = rec.save_checkpoints(run_dir, trained.best, data["train"].rows)
    copy_curves(work, run_dir)  # every grid point's TensorBoard curves, written as it trained
    distributed = {"world_size": world.size, "backend": world.backend, "ranks": ranks} if world.size > 1 else None
    context = RunContext(run_dir, mid, data, prep, started, checkpoints, distributed)
    record = replace(_record(config, trained, context), digests=digests)
    records.write_record(run_dir, record)
    return records.FinishedRun(run_dir, record)


def _train(data, config, work, world):
    """(every grid point, the linear phase, where the features came from, the ImageNet weights file)."""
    feats, features_info, linear_phase, weights_info = None, None, None, None
    if config.features_dir:
        with progress.step(f"loading the features from {config.features_dir}"):
            feats, features_info = _load_features(config.features_dir, data)
        feats = {k: v.to(config.device) for k, v in feats.items()}
    if config.mode == "linear":
        return _linear(data, feats, config, work, "linear"), None, features_info, None
    if config.mode == "linear-init":
        init_lr, init_bs = config.init_point
        phase = config.replace(points=((init_bs, init_lr),), epochs=EPOCHS["linear"])
        # one process trains the linear phase (seconds on features); every rank starts from it
        linear_phase = world.broadcast(_linear(data, feats, phase, work, "linear_phase")[0] if world.main else None)
    results, weights_info = _fine_tune(data, config, work, linear_phase, world)
    return results, linear_phase, features_info, weights_info


def _resolved(config):
    """The config with every choice made: the paper's grid, epochs and linear phase, the device."""
    loss, mode = config.loss, config.mode
    if loss not in LOSSES:
        raise UserError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}")
    if mode not in MODES:
        raise UserError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    if not config.data_dir:
        raise UserError("no prepared data; pass --data DIR (made by `harness mlspl prepare`)")
    if mode in ("linear", "linear-init") and not config.features_dir:
        raise UserError(f"mode {mode} trains on features; pass --features DIR")
    if mode in ("fine-tuned", "linear-init") and not config.coco_root:
        raise UserError(f"mode {mode} trains on images; pass --coco-root DIR")
    init_point = config.init_point
    if mode == "linear-init":
        init_point = init_point or LINEAR_INIT.get(loss)
        if init_point is None:
            raise UserError(f"the authors fixed the linear phase of linear-init only for "
                            f"{' and '.join(LINEAR_INIT)}; pass --init-lr and --init-batch-size for {loss}")
    elif init_point is not None:
        raise UserError(f"--init-lr and --init-batch-size set the linear phase of mode linear-init; "
                        f"leave them out for mode {mode}")
    paper_epochs = EPOCHS["linear" if mode == "linear" else "fine-tuned"]
    config = config.replace(points=tuple(tuple(p) for p in (config.points or paper_grid())),
                            init_point=None if init_point is None else tuple(init_point),
                            epochs=paper_epochs if config.epochs is None else config.epochs)
    _check_numbers(config, paper_epochs)
    return config.replace(device=pick_device(config.device))


def _check_numbers(config, paper_epochs):
    """Each number the user can set, before anything is loaded or trained."""
    checks.whole("--epochs", config.epochs, fix=f"leave --epochs out for the paper's {paper_epochs}")
    checks.whole("--resolution", config.resolution)
    checks.whole("--workers", config.workers, minimum=0)
    checks.seed(config.seed)
    for bs, lr in config.points:
        checks.whole("--batch-size", bs)
        checks.positive("--lr", lr)
    if config.init_point is not None:
        checks.whole("--init-batch-size", config.init_point[1])
        checks.positive("--init-lr", config.init_point[0])


def _check_batch_sizes(data, config, asked):
    """No batch may be larger than a split: train, val and test loaders all drop their last partial batch.
    asked: the config as given (were the grid and the linear phase the user's or the paper's?)."""
    sizes = {name: len(split.images) for name, split in data.items()}
    flag, fix = ("--batch-size", "use --batch-size N with N") if asked.points else \
        ("the paper's grid batch size", "train one point with --lr and --batch-size N (flags the run smoke), N")
    for bs in sorted({bs for bs, _ in config.points}):
        checks.batch_fits(flag, bs, sizes, fix)
    if config.init_point is not None:
        flag, fix = ("--init-batch-size", "use --init-batch-size N with N") if asked.init_point is not None else \
            ("the authors' linear-phase batch size", "pass --init-lr and --init-batch-size N (flags the run smoke), N")
        checks.batch_fits(flag, config.init_point[1], sizes, fix)


def _smoke_reasons(config, prep, data, features_info):
    reasons = []
    extraction = (features_info or {}).get("extraction") or {}
    if config.random_weights or extraction.get("random_weights"):
        reasons.append("random weights")
    if prep.get("smoke_subset"):
        reasons.append("smoke subset")
    counts = {k: len(v.images) for k, v in data.items()}
    if counts != FULL_COUNTS:
        reasons.append(f"not the full COCO 2014 ({counts['train']}/{counts['val']}/{counts['test']} images)")
    paper_epochs = EPOCHS["linear" if config.mode == "linear" else "fine-tuned"]
    if config.epochs != paper_epochs:
        reasons.append(f"{config.epochs} epochs, not {paper_epochs}")
    if sorted(config.points) != sorted(paper_grid()):
        reasons.append("not the paper's grid: " + ", ".join(f"bs {b} lr {lr:g}" for b, lr in config.points))
    if config.resolution != RESOLUTION:
        reasons.append(f"resolution {config.resolution}, not {RESOLUTION}")
    if extraction and extraction.get("resolution") != RESOLUTION:
        reasons.append(f"features at resolution {extraction.get('resolution')}, not {RESOLUTION}")
    if config.max_steps:
        reasons.append(f"at most {config.max_steps} steps per epoch")
    fixed, init_point = LINEAR_INIT.get(config.loss), config.init_point
    if init_point is not None and tuple(init_point) != fixed:  # only linear-init has a linear phase
        authors = (f"not the authors' lr {fixed[0]:g} bs {fixed[1]}" if fixed
                   else f"the authors fixed none for {config.loss}")
        reasons.append(f"linear phase lr {init_point[0]:g} bs {init_point[1]}, {authors}")
    return reasons


def _model_entry(mid, manifest=None):
    try:
        spec = get_spec(mid, manifest)
        return records.model_section(spec)
    except UserError:  # a loss and mode without a manifest entry (e.g. BCE linear-init)
        return {"id": mid, "family": "mlspl", "arch": {"name": "mlspl_resnet50", "num_classes": 80}, "paper": {}}


def _training_measurement(measured):
    """SpanMeasurement's figures for a whole training (every grid point, epoch, val and test pass)."""
    measured["notes"].append("spans the whole training of this session: every grid point and epoch, with the "
                             "val and test scoring (a resumed training measures only what this session ran)")
    measured["reasons"]["images_per_s"] = "a training over a grid has no single images/s (see timings.wall_s)"
    measured["reasons"]["energy_j_per_image"] = "energy is for the whole training: see energy_j"
    return measured


def _record(config, trained, context):
    """The run record (kind "train"): what was asked (config), what training gave, where it ran."""
    c, best, data, prep, mid = config, trained.best, context.data, context.prep, context.model_id
    n_scored = len(best.test_scores)
    labels = data["test"].labels[:n_scored].astype(np.uint8)
    root = c.coco_root or c.data_dir
    reasons = _smoke_reasons(config, prep, data, trained.features)
    names = [name for _, name, _ in COCO_CATEGORIES] if labels.shape[1] == 80 else None
    return records.Record(
        kind="train", run_id=context.run_dir.name, model=_model_entry(mid, c.manifest),
        checkpoint=rec.checkpoint_info(context.checkpoints, c.random_weights), config=config.as_json(),
        dataset={
            "name": "coco2014-val", "root": str(Path(root).resolve()), "image_set": "annotated",
            "n_images": n_scored, "n_images_total": len(data["test"].images),
            "fingerprint": {"annotations_sha256": (prep.get("annotations_sha256") or {}).get("val"),
                            "n_images": n_scored, "labels_sha256": labels_sha256(data["test"].image_ids[:n_scored], labels)},
            "smoke_subset": bool(prep.get("smoke_subset")),
        },
        eval={"protocol": "mlspl", "resolution": c.resolution, "resize": "squish", "normalize": "imagenet",
                 "batch_size": best.batch_size, "dtype": "float32", "amp": False, "device": c.device, "limit": None,
                 "drop_last": True},
        metrics=rec.compute_test_metrics(best.test_scores, labels, names),
        train={
            "loss": c.loss, "mode": c.mode, "epochs": c.epochs, "optimizer": "Adam (no weight decay, no schedule)",
            "label_estimator_lr_mult": LR_MULT if c.loss == "ROLE" else None,
            "expected_positives_k": c.expected_positives,
            "seeds": {"torch": c.seed, "numpy": c.seed, "single_positives": prep.get("seed", 1200),
                      "split": prep.get("seed", 1200)},
            "random_draws": draws_record(c.semantics),
            "counts": {"train": len(data["train"].images), "val": len(data["val"].images),
                       "val_scored": scored_rows(len(data["val"].images), best.batch_size),
                       "test": len(data["test"].images), "test_scored": n_scored},
            "selected": {"batch_size": best.batch_size, "lr": best.lr, "best_epoch": best.best_epoch,
                         "val_mAP": best.val_map, "test_mAP": best.test_map},
            "grid": [r.summary() for r in trained.grid],
            "linear_phase": None if trained.linear_phase is None else {**trained.linear_phase.summary(),
                                                                     "fixed_point": c.init_point},
            "features": trained.features, "backbone_weights": trained.backbone_weights,
            "checkpoints": context.checkpoints,
        },
        timings={"wall_s": trained.wall_s, "images_per_s": None}, measurement=trained.measurement,
        distributed=context.distributed or {}, environment=records.environment(), started_at=context.started,
        finished_at=records.utc_now(), smoke_reasons=reasons, files=dict(records.SCORE_FILES))
