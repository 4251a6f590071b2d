"""The end of a Query2Label training: the selected model's val2014 scores, metrics and the run record.

Selection `test` (theirs): the best epoch's val2014 scores, already computed, are the result (their
"best mAP"): the checkpoint was chosen on the test set, so the record says "selected on test".
Selection `held-out`: the best weights score val2014 once, now. Either way the metrics are the
harness's q2l protocol on the rows in image-id order (each image once), as an evaluation record;
the selection mAP in their rank-file order is kept beside it.
"""
import copy
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from harness.checkpoints import sha256_of
from harness.data.coco import fingerprint
from harness.data.smoke import is_smoke_root
from harness.errors import UserError
from harness.metrics import compute_metrics
from harness.q2l import data, run_folder, train
from harness.q2l.backbones import sizes
from harness.q2l.config import AUGMENTS, SELECTIONS
from harness.records import FinishedRun, Record, config_section, environment, model_section, save_arrays, utc_now, write_record
from harness.records.arrays import load_array

NOTES = ["their main_mlc.py is unseeded and uses cudnn.benchmark: here every random state is seeded and "
         "saved, so a run repeats bit for bit on CPU",
         "their commit ce9ffb2 removed --arch, so their script crashes at its first checkpoint save (their #31, #40)",
         "epochs are numbered from 0, as their logs print them"]
TRESNET_NOTE = ("TResNet: their InPlaceABN(Sync) is plain BatchNorm with weight |w| + eps here (the same maths, "
                "other rounding in the backward), and on several GPUs each rank's statistics are its own (theirs "
                "were synchronised)")
CONFIG_NOTE = ("config_new.json's batch_size is also what their q2l_infer.py applies for inference: where it "
               "decides the training batch (no log), it may be an inference batch")


def finish(session, parts, progress) -> FinishedRun:
    """Score (held-out selection), then on rank 0 write the arrays and the record."""
    scores, rows = session.world.every_rank(lambda: _test_scores(session, parts, progress))  # one line if refused
    # rank 0 writes; the others wait for it (a refusal there reaches them) instead of in the final barrier
    written = session.world.main_only(lambda: _write(session, parts, progress, scores, rows))
    return written if session.world.main else FinishedRun(session.run_dir, None)


def _write(session, parts, progress, scores, rows):
    test, test_labels = session.data.test, session.data.test_labels
    first = np.sort(np.unique(rows, return_index=True)[1])  # each image once (padding repeats dropped)
    order = np.argsort(rows[first], kind="stable")
    keep = first[order]
    scores, rows = scores[keep], rows[keep]
    labels = (test_labels[rows] > 0).astype(np.uint8)
    metrics = compute_metrics(scores, labels, "q2l", class_names=test.category_names)
    digests = save_arrays(session.run_dir, scores, labels, test.image_ids[rows])
    record = build_record(session, parts, progress, metrics, len(rows), digests)
    write_record(session.run_dir, record)
    return FinishedRun(session.run_dir, record)


def _test_scores(session, parts, progress):
    """(scores, rows) of val2014 by the selected model: saved (selection on test) or scored now."""
    if progress["selection"]["best_epoch"] < 0:
        why = progress["stopped"] or "see the history in state.pt"
        raise UserError(f"{session.run_dir}: no epoch gave a validation mAP above 0 ({why}); train longer or "
                        f"with another --lr")
    run_dir = Path(session.run_dir)
    if session.config.selection == "test":
        if not session.world.main:  # rank 0 writes them after the last epoch, maybe while this rank reads
            return None, None
        try:
            return (load_array(run_dir / run_folder.SELECTION_SCORES, "selection scores", ndim=2, kinds="f"),
                    load_array(run_dir / run_folder.SELECTION_ROWS, "selection rows", ndim=1, kinds="iu"))
        except (OSError, ValueError, UserError) as e:  # a file cut short or removed since the best epoch
            raise UserError(f"{run_dir}: the best epoch's scores cannot be read ({type(e).__name__}: "
                            f"{str(e)[:160]}); delete {run_dir} and train again") from None
    model = copy.deepcopy(parts.model)
    model.load_state_dict(load_file(str(run_dir / run_folder.BEST)))
    size = sizes(session.config.recipe, session.config.smoke)["img_size"]
    test = data.LabelledImages(session.data.root, session.data.test, session.data.test_labels,
                               data.eval_transform(size, session.config.recipe["orid_norm"]))
    loader = data.val_loader(test, session.config.batch_size, session.world, session.config.workers)
    scores, rows, _ = train.score_all(parts, model, loader)
    return scores, rows


def smoke_reasons(session, progress):
    c, reasons = session.config, []
    if is_smoke_root(c.coco_root):
        reasons.append("smoke subset")
    if c.smoke:
        reasons.append("--smoke: a tiny backbone of the same family, a small transformer, 64 px")
    if c.epochs < c.recipe["epochs"] and not (progress["stopped"] or "").startswith("early stop"):
        reasons.append(f"{c.epochs} epochs, not the authors' {c.recipe['epochs']}")
    if c.backbone_weights == "random" and not c.smoke:
        reasons.append("random backbone weights")
    if c.augment != "authors":
        reasons.append("not the authors' augmentation")
    return reasons


def build_record(session, parts, progress, metrics, n_images, digests) -> Record:
    """The run's Record; `digests`: sha256 of the saved arrays (records.save_arrays); the trained weights,
    best.safetensors, are the record's checkpoint (path and sha256)."""
    c, sel, root = session.config, progress["selection"], Path(session.config.coco_root)
    best = run_folder.BEST
    weights_sha = sha256_of(session.run_dir / best)
    peak = progress["peak"]
    return Record(
        kind="train", run_id=session.run_dir.name, model=model_section(session.spec),
        checkpoint={"path": str(session.run_dir / best), "sha256": weights_sha, "pinned": False,
                    "random_weights": False, "arch": parts.model.arch, "epoch": sel["best_epoch"],
                    "model": sel["best_model"]},
        config=config_section(c),
        dataset={"name": "coco2014-val", "root": str(root.resolve()), "image_set": "all", "n_images": n_images,
                 "fingerprint": {**fingerprint(session.data.test), "n_images": n_images},
                 "smoke_subset": is_smoke_root(root)},
        eval={"protocol": "q2l", "resolution": parts.model.img_size, "resize": "squish",
              "normalize": "none" if c.recipe["orid_norm"] else "imagenet", "batch_size": c.batch_size,
              "dtype": "float32", "amp": str(parts.amp).replace("torch.", "") if parts.amp else False,
              "device": session.device, "image_set": "all"},
        metrics=metrics, labels=session.data.label_sources["val2014"],
        timings={"wall_s": progress["wall_s"], "images_per_s": _mean_speed(progress["history"])},
        measurement={**peak, "reasons": {} if peak.get("peak_vram_mib") is not None else
                     {"peak_vram_mib": "no GPU measurement (CPU run, or NVML unavailable)"}},
        distributed={"world_size": session.world.size, "backend": session.world.backend},
        train=train_section(session, parts, progress), environment=environment(),
        started_at=progress["started_at"], finished_at=utc_now(), smoke_reasons=smoke_reasons(session, progress),
        files={"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy"}, digests=digests)


def _mean_speed(history):
    speeds = [h["images_per_s"] for h in history if h.get("images_per_s")]
    return sum(speeds) / len(speeds) if speeds else None


def train_section(session, parts, progress):
    c, sel = session.config, progress["selection"]
    gpu = torch.device(session.device).type == "cuda"
    return {
        "model_id": c.model_id, "selection": c.selection, "selection_note": SELECTIONS[c.selection],
        "holdout": c.holdout if c.selection == "held-out" else None,
        "recipe": c.recipe.as_json(), "deviations": c.deviations(), "epochs": c.epochs,
        "batch_size": c.batch_size, "lr": c.lr, "seed": c.seed, "seeding": "initial weights: torch.manual_seed(seed); "
        "training stream: seed + 7919 * rank for torch, random, numpy; augmentation: per image from (seed, epoch, row); "
        "train sampler: DistributedSampler seed 0 (theirs)", "augment": AUGMENTS[c.augment],
        "epochs_run": progress["epoch"], "stopped": progress["stopped"],
        "best_epoch": sel["best_epoch"], "best_model": sel["best_model"], "selection_mAP": sel["best_mAP"],
        "best_regular_mAP": sel["best_regular_mAP"], "best_regular_epoch": sel["best_regular_epoch"],
        "best_ema_mAP": sel["best_ema_mAP"], "history": progress["history"],
        "gpu_hours": progress["gpu_s"] / 3600 if gpu else None,
        "gpu_hours_reason": None if gpu else f"no GPU: trained on {session.device}",
        "memory_techniques": session.plan.techniques(), "memory_plan": session.plan.as_record(),
        "vram_budget": c.vram_budget, "memory_plans_measured": [t.as_record() for t in session.plan_trials],
        "amp": str(parts.amp).replace("torch.", "") if parts.amp else "off",
        "skipped_steps": progress["skipped_steps"], "backbone_weights": progress["backbone"],
        "world_size": session.world.size, "n_train": int(len(session.data.train_rows)),
        "n_select": int(len(session.data.select_rows)), "select_split": session.data.select_split,
        "label_sources": session.data.label_sources, "smoke": c.smoke,
        "notes": NOTES + [TRESNET_NOTE] * c.recipe["backbone"].startswith("tresnet")
        + [CONFIG_NOTE] * (c.recipe.sources["batch_size"] == "config_new.json"),
    }

