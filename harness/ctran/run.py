"""C-Tran training (the authors' main.py + run_epoch.py) and partial-label evaluation, with run records.

Training, as theirs: Adam lr 1e-5 (no weight decay: theirs reaches SGD only), batch 16, 100 epochs,
whole network at one lr; loss BCE-with-logits SUMMED over the unknown entries (all entries without
LMT); after each epoch a validation pass with no label known, ReduceLROnPlateau(min, 0.1, patience 5)
on its summed loss / N, and the checkpoint kept when its mAP >= the best so far.
Selection `test` is their protocol: their validation loader IS val2014, the test set, so the LR
schedule and the checkpoint are chosen on test ("selected on test", flagged in every record).
Selection `held-out` holds a seeded part of train2014 out for both instead (recorded).
Seeds: per epoch, Python `random` (their RandomChoice crop), torch (crops, flips, dropout) and the
shuffle are reseeded from (seed, epoch), and the label masks are keyed by (seed, epoch, image row):
so a run resumed after epoch N continues as if it had not stopped.
What a run is asked is a config (config.py); its record is built in record.py.
"""
import json
import logging
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.models import ResNet101_Weights

from harness import progress, records
from harness.checkpoints import find_state_dict, read_pickle, sha256_of
from harness.ctran import checkpoint as ckpt
from harness.ctran import distributed, masks
from harness.ctran.config import CtranEvalConfig
from harness.ctran.data import (
    MaskedImages,
    TestDraw,
    TrainingDraw,
    eval_transform,
    train_transform,
)
from harness.ctran.distributed import gather
from harness.ctran.metrics import compute_ctran_metrics
from harness.ctran.record import (
    Checkpoint,
    Scored,
    Trained,
    build_record,
    training_reasons,
)
from harness.ctran.run_folder import open_run
from harness.data.coco import check_images, fingerprint, load_labels
from harness.data.loader import usable_cores
from harness.distributed import World, pick_device
from harness.errors import Interrupted, UserError
from harness.manifest import get_spec
from harness.measure.measurement import SpanMeasurement, nvml_baseline_mib
from harness.models.ctran import CTran
from harness.progress import bar, bars_enabled
from harness.records import FinishedRun, check_runs_root, utc_now
from harness.records.curves import TrainingCurves
from harness.records.training_state import check_epoch, read_state, restoring

logger = logging.getLogger(__name__)

STATE, LAST, BEST = "state.pt", "last.safetensors", "best.safetensors"


def _say(text):
    progress.say(text)  # beside the bars, on stderr; --quiet hides it


def split_rows(n, fraction, seed):
    """(train rows, held-out rows), each sorted: a seeded permutation, the last `fraction` held out."""
    perm = np.random.RandomState(seed).permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(perm[: n - n_val]), np.sort(perm[n - n_val:])


def _loader(dataset, batch_size, workers, shuffle=False, seed=0, world=None, epoch=0):
    """Their DataLoader (shuffled for training); with several processes, this process's shard."""
    world = world or World()
    g = torch.Generator().manual_seed(seed)
    workers = usable_cores() if workers is None else workers
    if world.size == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=g)
    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=g)


def unknown_loss(pred, labels, mask, use_lmt):
    """Their loss_out: BCE with logits summed over the unknown entries (over all entries without LMT)."""
    loss = F.binary_cross_entropy_with_logits(pred, labels, reduction="none")
    return ((mask == -1).float() * loss).sum() if use_lmt else loss.sum()


def predict(model, loader, device, use_lmt, progress=False, world=None, on_batch=None):
    """(logits, masks, rows, summed unknown-entry loss / N) as their run_epoch in eval mode.

    With several processes each scores its shard; the shards are gathered (rows a padded sampler
    repeats are kept once) and every process returns the same arrays."""
    world = world or World()
    model.eval()
    logits, all_labels, all_masks, rows = [], [], [], []
    with torch.no_grad():
        for images, labels, mask, row in bar(len(loader), "eval", unit="batch", enabled=progress, leave=False,
                                             iterable=loader):
            logits.append(model(images.to(device), mask.to(device)).cpu())
            if on_batch is not None:
                on_batch(len(images))
            all_labels.append(labels)
            all_masks.append(mask)
            rows.append(row)
    logits, labels, masks_, rows = gather([torch.cat(x) for x in (logits, all_labels, all_masks, rows)], world)
    _, first = np.unique(rows.numpy(), return_index=True)
    keep = torch.as_tensor(np.sort(first))
    logits, labels, masks_, rows = logits[keep], labels[keep], masks_[keep], rows[keep]
    loss = float(unknown_loss(logits.double(), labels.double(), masks_, use_lmt))
    return logits, masks_, rows.numpy(), loss / max(len(rows), 1)


def train_step(model, optimizer, images, labels, mask, use_lmt, size=1):
    """One optimizer step; the loss is scaled by the world size because DDP averages gradients."""
    loss_out = unknown_loss(model(images, mask), labels, mask, use_lmt)
    optimizer.zero_grad()
    (loss_out * size).backward()
    optimizer.step()
    return float(loss_out.detach())


def train_epoch(model, loader, optimizer, device, use_lmt, progress=False, size=1):
    model.train()
    total, n = 0.0, 0
    for images, labels, mask, _ in bar(len(loader), "train", unit="batch", enabled=progress, leave=False, iterable=loader):
        total += train_step(model, optimizer, images.to(device), labels.to(device), mask.to(device), use_lmt, size)
        n += len(labels)
    return total / max(n, 1)


def load_backbone_weights(model, source):
    """ImageNet weights for their ResNet-101 (torchvision's V1, as their pretrained=True), a file, or random.
    A file is read without running code (a pickle that needs code is refused) and must fit the backbone."""
    if source == "random":
        return {"source": "random", "sha256": None}
    if source == "imagenet":
        state = ResNet101_Weights.IMAGENET1K_V1.get_state_dict(progress=bars_enabled())
        info = {"source": "torchvision ResNet101_Weights.IMAGENET1K_V1", "sha256": None}
    else:
        try:
            ckpt.load_into(model.backbone.base_network, find_state_dict(read_pickle(source)), source)
        except UserError as e:  # the reason, with the fix for this flag
            raise UserError(f"--backbone {source}: {str(e).rsplit('; ', 1)[0]}; pass imagenet, random, or a "
                            f"state dict file of torchvision's ResNet-101") from None
        return {"source": str(source), "sha256": sha256_of(source)}
    ckpt.load_into(model.backbone.base_network, state, source)
    return info


@dataclass(frozen=True)
class TrainingData:
    """The images a training uses: train2014 rows to train on, rows to select on, val2014 rows to test on."""
    root: Path
    train_labels: object
    test_labels: object
    val_labels: object  # test_labels (selection `test`, theirs) or train_labels (`held-out`)
    train_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray


def load_training_data(config):
    root = Path(config.coco_root)
    train_labels, test_labels = load_labels(root, "train2014", "annotated"), load_labels(root, "val2014", "annotated")
    check_images(root, train_labels)
    check_images(root, test_labels)
    held_out = config.selection == "held-out"
    train_rows = np.arange(len(train_labels))
    if held_out:
        train_rows, val_rows = split_rows(len(train_labels), config.holdout, config.seed)
    test_rows = np.arange(len(test_labels))
    if config.limit:
        train_rows, test_rows = train_rows[:config.limit], test_rows[:config.limit]
        val_rows = val_rows[:config.limit] if held_out else test_rows
    elif not held_out:
        val_rows = test_rows
    return TrainingData(root, train_labels, test_labels, train_labels if held_out else test_labels, train_rows,
                        val_rows, test_rows)


def train(config):
    """Train C-Tran as `config` (CtranTrainConfig) asks, then score val2014 with the selected
    checkpoint; returns its FinishedRun (the record None on torchrun ranks other than 0)."""
    where = {}  # the run folder and its state, once known: an interruption names them
    try:
        return _train(config, where)
    except KeyboardInterrupt:
        done = where["state"]["epoch"] if "state" in where else 0
        raise Interrupted.in_training(config.model_id, where.get("run_dir"), done) from None


def _train(config, where):
    device = pick_device(config.device)
    world = World.from_env(device)  # under torchrun "cuda" is this rank's GPU from here on
    data, model, file_backbone = world.every_rank(lambda: _checked(config, world, device))
    settings = {**config.settings(), "n_train": len(data.train_rows), "n_val": len(data.val_rows),
                "processes": world.size}
    # every process reads the same run folder (resume state); only rank 0 writes; a refusal stops every rank
    run_dir = world.broadcast(world.main_only(lambda: open_run(config, settings)))

    where["run_dir"] = run_dir
    optimizer, scheduler, state = world.every_rank(lambda: _start(config, run_dir, model, file_backbone))
    where["state"] = state
    if state["epoch"] and world.main:
        _say(f"resuming {run_dir} after epoch {state['epoch']}/{config.epochs}")
    net = distributed.wrap(model, device, world)

    seed, epochs, scale, crop, arch = config.seed, config.epochs, config.scale, config.crop, config.arch
    train_set = MaskedImages(data.root, data.train_labels, train_transform(scale, crop),
                             TrainingDraw(use_lmt=config.use_lmt, seed=seed), rows=data.train_rows)
    val_set = MaskedImages(data.root, data.val_labels, eval_transform(scale, crop), TestDraw(known=0),
                           rows=data.val_rows)
    train_reasons = training_reasons(config)  # the checkpoint carries them
    batch = config.batch_size // world.size
    curves = TrainingCurves(run_dir) if world.main else None  # run_dir/tensorboard, live
    for epoch in range(state["epoch"] + 1, epochs + 1):
        t0 = time.perf_counter()
        random.seed(f"ctran-epoch:{seed}:{epoch}" + (f":{world.rank}" if world.size > 1 else ""))
        torch.manual_seed(seed * 100003 + epoch + 7919 * world.rank)
        train_set.epoch = epoch
        lr_now = optimizer.param_groups[0]["lr"]
        shown = config.progress and world.main
        train_loss = train_epoch(net, _loader(train_set, batch, config.workers, True, seed * 100003 + epoch,
                                              world, epoch), optimizer, device, config.use_lmt, shown, world.size)
        logits, val_masks, rows, val_loss = predict(net, _loader(val_set, batch, config.workers, world=world),
                                                    device, config.use_lmt, shown, world)
        val_map = compute_ctran_metrics(torch.sigmoid(logits).numpy(), data.val_labels.labels[rows],
                                        val_masks.numpy())["mAP"]
        scheduler.step(val_loss)
        if val_map is not None and val_map >= state["best_mAP"]:  # their >=: a tie goes to the later epoch
            state["best_mAP"], state["best_epoch"] = val_map, epoch
            if world.main:
                ckpt.save(run_dir / BEST, model, arch, {"epoch": epoch, "selection": config.selection,
                                                        "val_mAP": val_map, "scale": scale, "crop": crop,
                                                        "smoke_reasons": train_reasons})
        state["epoch"] = epoch
        state["wall_s"] += time.perf_counter() - t0
        state["history"].append({"epoch": epoch, "lr": lr_now, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_mAP": val_map})
        if not world.main:
            continue
        ckpt.save(run_dir / LAST, model, arch, {"epoch": epoch})
        tmp = run_dir / (STATE + ".tmp")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state_json": json.dumps(state)}, tmp)
        tmp.replace(run_dir / STATE)
        curves.epoch(epoch, train_loss=train_loss, learning_rate=lr_now, val_loss=val_loss, val_mAP=val_map)
        per_epoch = state["wall_s"] / epoch
        _say(f"epoch {epoch}/{epochs}  train loss {train_loss:.3f}  val loss {val_loss:.3f}  val mAP "
             f"{val_map if val_map is None else round(val_map, 2)}  lr {lr_now:g}  about "
             f"{progress.duration((epochs - epoch) * per_epoch)} left")
    # rank 0 scores the test set with the selected checkpoint and writes the record; the others wait for it
    # (a refusal there reaches them) instead of in the final barrier
    if world.main:
        curves.close()
    record = world.main_only(lambda: _finish_training(Trained(config, run_dir, settings, state, data.test_rows),
                                                      device))
    return record if world.main else FinishedRun(run_dir, None)


def _checked(config, world, device):
    """Everything checked before a run folder exists: (training data, the seeded model with its backbone
    file loaded, that file's info or None). imagenet's weights are fetched for a new run only."""
    if config.batch_size % world.size:
        raise UserError(f"--batch-size {config.batch_size} does not split evenly over {world.size} processes; "
                        "pass a multiple")
    check_runs_root(config.runs_root)
    data = load_training_data(config)
    torch.manual_seed(config.seed)  # the initial weights (their weights_init and torchvision's) are seeded too
    model = CTran(**{k: v for k, v in config.arch.items() if k not in ("name", "img_size")}).to(device)
    file_backbone = None if config.backbone in ("imagenet", "random") else load_backbone_weights(model, config.backbone)
    return data, model, file_backbone


STATE_KEYS = {"epoch": int, "best_mAP": float, "history": list, "wall_s": float}


def _start(config, run_dir, model, file_backbone):
    """(optimizer, scheduler, state) of the seeded model (its backbone file loaded), or all three as after
    the last finished epoch. A damaged state.pt is one line naming it."""
    resumed = (run_dir / STATE).exists()
    backbone_info = None
    if not resumed:
        backbone_info = file_backbone or load_backbone_weights(model, config.backbone)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=5)
    state = {"epoch": 0, "best_mAP": 0.0, "best_epoch": None, "history": [], "backbone": backbone_info,
             "started_at": utc_now(), "wall_s": 0.0}
    if resumed:  # resume after the last finished epoch
        fix = f"delete {run_dir} to start over, or run without --resume for a new run"
        saved = read_state(run_dir / STATE, ("optimizer", "scheduler", "state_json"), fix)
        with restoring(run_dir / STATE, fix):
            state = json.loads(saved["state_json"])
            wrong = [k for k, kind in STATE_KEYS.items() if not isinstance(state.get(k), (int, float) if kind is float
                                                                           else kind)]
            if wrong:
                raise ValueError(f"its progress lacks a valid {wrong[0]!r}")
            check_epoch(run_dir / STATE, state["epoch"], fix)
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        try:
            weights, _, meta = ckpt.read(run_dir / LAST)
            ckpt.load_into(model, weights, run_dir / LAST)
        except UserError:
            raise UserError(f"{run_dir / LAST} is missing, unreadable or of another model; {fix}") from None
        if meta.get("epoch") != state["epoch"]:  # stopped between its two writes: weights and optimizer disagree
            raise UserError(f"{run_dir / LAST} holds epoch {meta.get('epoch')}, {run_dir / STATE} epoch "
                            f"{state['epoch']}; {fix}")
    return optimizer, scheduler, state


def _finish_training(trained, device):
    """The selected checkpoint's test pass (every label unknown), recorded with the training."""
    config, run_dir = trained.config, trained.run_dir
    if trained.state["best_epoch"] is None:
        raise UserError(f"{run_dir}: no epoch gave a validation mAP (no positives in the validation images?)")
    test = CtranEvalConfig(weights=str(run_dir / BEST), coco_root=config.coco_root, model_ids=(config.model_id,),
                           known_percents=(0,), device=device, workers=config.workers, batch_size=config.batch_size)
    return FinishedRun(run_dir, evaluate_checkpoint(test, trained)[0])


def evaluate_checkpoint(config, trained=None):
    """Score val2014 once per known-label setting of `config` (CtranEvalConfig; one image pass each)
    and write one record per setting; `trained`: the training whose test pass this is."""
    config = replace(config, device=pick_device(config.device))
    device, weights = config.device, config.weights
    specs = [get_spec(m, config.manifest) for m in config.model_ids]
    state, arch, meta = ckpt.read(weights)
    arch = arch or dict(specs[0].arch)
    if bool(arch.get("use_lmt", True)) != bool(specs[0].train["use_lmt"]):
        lmt = arch.get("use_lmt", True)
        raise UserError(f"{weights} is a C-Tran trained {'with' if lmt else 'without'} label-mask training, but "
                        f"{specs[0].id} is {'without' if lmt else 'with'} it; pass that model's checkpoint "
                        f"(or evaluate {'ctran-r101-576' if lmt else 'ctran-r101-576-no-lmt'})")

    shape = {k: v for k, v in arch.items() if k not in ("name", "img_size")}
    with torch.device("meta"):  # names and shapes, no memory, no random draws: another model's file is
        model = CTran(**shape)  # refused before a 60 M-weight build
    ckpt.check_fits(model.state_dict(), state, weights)
    model.to_empty(device="cpu")  # no random init either: the strict load below sets every entry
    ckpt.load_into(model, state, weights)
    baseline_mib = nvml_baseline_mib(device)  # before the model reaches the GPU
    model.to(device)
    checkpoint = Checkpoint(str(weights), sha256_of(weights), arch, meta)
    root = Path(config.coco_root)
    labels = load_labels(root, "val2014", "annotated")
    check_images(root, labels)
    rows = np.arange(len(labels)) if trained is None else np.asarray(trained.test_rows)
    rows = rows[:config.limit] if config.limit else rows
    out = []
    run_dirs = [trained.run_dir] if trained else [None] * len(specs)
    for spec, percent, run_dir in zip(specs, config.known_percents, run_dirs):
        known = masks.known_count(percent, 80)
        dataset = MaskedImages(root, labels, eval_transform(checkpoint.scale, checkpoint.crop),
                               TestDraw(known=known, draw=config.draw), rows=rows)
        t_setting = time.perf_counter()
        with SpanMeasurement(device, baseline_mib=baseline_mib) as meter:
            logits, mask, got_rows, loss = predict(model, _loader(dataset, config.batch_size, config.workers), device,
                                                   arch.get("use_lmt", True), config.progress, on_batch=meter.count)
        measured = meter.result()
        if trained:
            measured["notes"].append("covers the final test pass only; the training's time is train_wall_s")
        scores = torch.sigmoid(logits).numpy()
        metrics = compute_ctran_metrics(scores, labels.labels[got_rows], mask.numpy())
        run_dir = run_dir or records.new_run_dir(config.runs_root, spec.id)
        digests = records.save_arrays(run_dir, scores, labels.labels[got_rows], labels.image_ids[got_rows],
                                      masks=mask.numpy())
        scored = Scored(spec, percent, known, run_dir, len(got_rows), fingerprint(labels), loss, metrics, measured,
                        time.perf_counter() - t_setting, digests)
        record = build_record(config, checkpoint, scored, trained)
        records.write_record(run_dir, record)
        out.append(record)
    return out
