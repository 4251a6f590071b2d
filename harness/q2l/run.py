"""`harness q2l train` as a function: the authors' main_worker(), seeded, resumable, torchrun-ready.

prepare() (session.py) checks everything before the run folder exists. Seeds: the initial weights from
torch.manual_seed(seed); then every process seeds torch, Python and numpy with seed + 7919 * rank for the
training stream (dropout, DropPath, loader base seeds), and the augmentation of each image is seeded by
(seed, epoch, row). All states are saved after every epoch, so a resumed run continues bit for bit (CPU).
Rank 0 writes.
"""
import logging
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from harness.errors import Interrupted
from harness.measure.measurement import SpanMeasurement
from harness.q2l import data, run_folder, train
from harness.q2l.ema import ModelEma
from harness.q2l.memory import apply_memory_plan
from harness.q2l.progress import epoch_bar
from harness.q2l.record import finish
from harness.q2l.schedule import build_optimizer, build_schedule, steps_per_epoch
from harness.q2l.session import amp_dtype, prepare, seed_training_stream
from harness.records import FinishedRun, utc_now
from harness.records.curves import TrainingCurves
from harness.records.training_run import open_training_run

logger = logging.getLogger(__name__)


def build_parts(session, model):
    """Model on its device, AdamW + OneCycleLR, the memory plan, the EMA, DDP on several processes."""
    config, recipe, world = session.config, session.config.recipe, session.world
    model.to(session.device)
    optimizer = build_optimizer(model, config.lr, config.batch_size, recipe["weight_decay"])
    apply_memory_plan(session.plan, model, optimizer)
    ema = ModelEma(model, recipe["ema_decay"], device=session.plan.ema_device)
    net = model
    if world.size > 1:  # theirs: broadcast_buffers=False, no SyncBatchNorm
        cuda = torch.device(session.device).type == "cuda"
        net = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if cuda else None,
                                      broadcast_buffers=False)
    steps = steps_per_epoch(len(session.data.train_rows), config.batch_size, world.size)
    scheduler = build_schedule(optimizer, config.lr, steps, config.epochs)
    loss = {"gamma_neg": recipe["gamma_neg"], "gamma_pos": recipe["gamma_pos"], "clip": recipe["loss_clip"],
            "eps": recipe["eps"], "disable_torch_grad_focal_loss": recipe["dtgfl"]}
    return train.Parts(net, model, ema, optimizer, scheduler, loss, recipe["loss_dev"] if recipe["loss_dev"] > 0
                       else None, session.device, amp_dtype(config, session.device), recipe["ema_epoch"], world,
                       session.plan.micro_batch)


def fit(config, on_epoch=None) -> FinishedRun:
    """Train as `config` asks, then record; FinishedRun(run_dir, record) (record None on ranks > 0).
    `on_epoch(summary)` is called on rank 0 after every epoch (the command prints it). Ctrl-C says
    what was kept and the flag that continues it."""
    where = {}  # the run folder and the progress, once known
    try:
        return _fit(config, on_epoch, where)
    except KeyboardInterrupt:
        done = where["progress"]["epoch"] if "progress" in where else 0
        raise Interrupted.in_training(config.model_id, where.get("run_dir"), done) from None


def _fit(config, on_epoch, where):
    session, model, backbone_info = prepare(config)
    world = session.world
    settings = {**config.settings(), "n_train": int(len(session.data.train_rows)),
                "n_select": int(len(session.data.select_rows)), "processes": world.size}
    # rank 0 opens the folder; a refusal there (another number of processes, other settings) stops every rank
    run_dir = world.main_only(lambda: open_training_run(config.runs_root, config.model_id, config.resume, settings))
    session.run_dir = where["run_dir"] = world.broadcast(run_dir)
    parts = build_parts(session, model)
    progress = {"epoch": 0, "selection": train.Selection().__dict__, "history": [], "stopped": None,
                "backbone": backbone_info, "started_at": utc_now(), "wall_s": 0.0, "gpu_s": 0.0,
                "peak": {}, "skipped_steps": 0}
    if (session.run_dir / run_folder.STATE).exists():
        progress = world.every_rank(lambda: run_folder.load_state(session.run_dir, parts, world.rank))
        logger.info("resuming %s after epoch %d", session.run_dir, progress["epoch"] - 1)
    else:
        seed_training_stream(config.seed, world.rank)
    where["progress"] = progress
    curves = TrainingCurves(session.run_dir) if world.main else None  # run_dir/tensorboard, live
    while progress["epoch"] < config.epochs and not progress["stopped"]:
        summary = _epoch(session, parts, progress)
        where["progress"] = progress
        if world.main:
            curves.epoch(summary["epoch"] + 1, train_loss=summary["train_loss"], learning_rate=summary["lr_end"],
                         val_loss=summary["val_loss"], val_mAP=summary["mAP"], val_loss_ema=summary["val_loss_ema"],
                         val_mAP_ema=summary["mAP_ema"])
            if on_epoch:
                on_epoch(summary)
    if curves:
        curves.close()
    return finish(session, parts, progress)


def _epoch(session, parts, progress):
    """One of main_worker's epochs: EMA re-created at ema_epoch, train, score both models, select,
    early stop; then the state is saved (rank 0) with every process's random states."""
    config, world, epoch = session.config, session.world, progress["epoch"]
    if epoch == parts.ema_epoch:  # theirs: ema_m = ModelEma(model.module, args.ema_decay)
        parts.ema = ModelEma(parts.model, config.recipe["ema_decay"], device=session.plan.ema_device)
    t0 = time.perf_counter()
    with SpanMeasurement(session.device) as meter:
        loader = data.train_loader(session.train_set, config.batch_size, world, config.workers, epoch)
        with epoch_bar(len(loader) * config.batch_size, epoch, config.epochs, config.progress and world.main) as bar:
            trained = train.train_epoch(parts, loader, epoch, on_batch=bar.update)
        meter.count(trained["images"])
        val = data.val_loader(session.select_set, config.batch_size, world, config.workers)
        scores, rows, loss = train.score_all(parts, parts.model, val)
        ema_scores, _, ema_loss = train.score_all(parts, parts.ema.module, val)
    labels = session.select_set.labels[rows]
    regular, ema = train.voc_map(scores, labels), train.voc_map(ema_scores, labels)
    selection = train.Selection(**{**progress["selection"], "ema_maps": tuple(progress["selection"]["ema_maps"])})
    is_best = selection.update(epoch, regular, ema)
    wall = time.perf_counter() - t0
    progress["wall_s"] += wall
    progress["gpu_s"] += wall * world.size if torch.device(session.device).type == "cuda" else 0.0
    progress["peak"] = _peaks(progress["peak"], world.gather(meter.result()))
    progress["skipped_steps"] += trained["skipped_steps"]
    entry = {"epoch": epoch, "lr_end": parts.optimizer.param_groups[0]["lr"], "train_loss": trained["loss"],
             "val_loss": loss, "val_loss_ema": ema_loss, "mAP": regular, "mAP_ema": ema, "best": is_best,
             "wall_s": wall, "images_per_s": trained["images"] / wall if wall else None}
    progress["history"].append(entry)
    progress["selection"] = {**selection.__dict__, "ema_maps": list(selection.ema_maps)}
    progress["epoch"] = epoch + 1
    if train.diverged(loss, ema_loss):
        progress["stopped"] = f"NaN validation loss at epoch {epoch} (theirs exits there)"
    elif config.recipe["early_stop"] and selection.early_stop(epoch):
        progress["stopped"] = f"early stop after epoch {epoch} (their rule: 8 epochs past both bests)"
    rng = world.gather(run_folder.rng_states())
    if world.main:
        if is_best:
            _save_best(session, parts, selection, scores, ema_scores, rows)
        run_folder.save_state(session.run_dir, parts, progress, rng)
    return {**entry, "epochs": config.epochs, "best_mAP": selection.best_mAP, "best_epoch": selection.best_epoch,
            "best_model": selection.best_model, "stopped": progress["stopped"], "total_wall_s": progress["wall_s"]}


def _save_best(session, parts, selection, scores, ema_scores, rows):
    """Their model_best: the better of the two models' weights, and its scores on the selection images."""
    ema = selection.best_model == "ema"
    module = parts.ema.module if ema else parts.model
    run_folder.save_weights(session.run_dir / run_folder.BEST, module, parts.model.arch,
                            {"epoch": selection.best_epoch, "model": selection.best_model, "mAP": selection.best_mAP,
                             "model_id": session.config.model_id, "smoke": session.config.smoke})
    run_folder.save_array(session.run_dir / run_folder.SELECTION_SCORES, ema_scores if ema else scores)
    run_folder.save_array(session.run_dir / run_folder.SELECTION_ROWS, rows)


def _peaks(before, measured):
    """The largest memory figures so far, over epochs, resumes and processes."""
    out = dict(before)
    for m in measured:
        for key in ("peak_vram_mib", "torch_max_allocated_mib", "torch_max_reserved_mib", "peak_rss_mib"):
            if m.get(key) is not None:
                out[key] = max(out.get(key) or 0, m[key])
    return out
