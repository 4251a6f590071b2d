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
"""
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from harness.ctran import checkpoint as ckpt
from harness.ctran import masks
from harness.errors import UserError
from harness.records import utc_now

PAPER = {"epochs": 100, "batch_size": 16, "lr": 1e-5, "scale": 640, "crop": 576}
TINY = {"blocks": [1, 1, 1, 1], "block": "basic", "layers": 1}  # smoke runs only
PAPER_ARCH = {"blocks": [3, 4, 23, 3], "block": "bottleneck", "layers": 3, "heads": 4}
SELECTIONS = {"test": "selected on test (the authors' protocol: their validation loader is val2014)",
              "held-out": "selected on a held-out part of train2014"}
STATE, LAST, BEST, SETTINGS = "state.pt", "last.safetensors", "best.safetensors", "settings.json"


def _say(text):
    print(text, file=sys.stderr, flush=True)


def base_id(use_lmt):
    return "ctran-r101-576" if use_lmt else "ctran-r101-576-no-lmt"


def split_rows(n, fraction, seed):
    """(train rows, held-out rows), each sorted: a seeded permutation, the last `fraction` held out."""
    perm = np.random.RandomState(seed).permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(perm[: n - n_val]), np.sort(perm[n - n_val:])


def _loader(dataset, batch_size, workers, shuffle=False, seed=0, size=1, rank=0, epoch=0):
    """Their DataLoader (shuffled for training); with several processes, this process's shard."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    g = torch.Generator().manual_seed(seed)
    if size == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=g)
    sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=g)


def unknown_loss(pred, labels, mask, use_lmt):
    """Their loss_out: BCE with logits summed over the unknown entries (over all entries without LMT)."""
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(pred, labels, reduction="none")
    return ((mask == -1).float() * loss).sum() if use_lmt else loss.sum()


def predict(model, loader, device, use_lmt, progress=False, size=1, on_batch=None):
    """(logits, masks, rows, summed unknown-entry loss / N) as their run_epoch in eval mode.

    With several processes each scores its shard; the shards are gathered (rows a padded sampler
    repeats are kept once) and every process returns the same arrays."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from harness.ctran.distributed import gather

    model.eval()
    logits, all_labels, all_masks, rows = [], [], [], []
    with torch.no_grad():
        for images, labels, mask, row in tqdm(loader, disable=not progress, leave=False, desc="eval"):
            logits.append(model(images.to(device), mask.to(device)).cpu())
            if on_batch is not None:
                on_batch(len(images))
            all_labels.append(labels)
            all_masks.append(mask)
            rows.append(row)
    logits, labels, masks_, rows = gather([torch.cat(x) for x in (logits, all_labels, all_masks, rows)], size)
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
    from tqdm import tqdm

    model.train()
    total, n = 0.0, 0
    for images, labels, mask, _ in tqdm(loader, disable=not progress, leave=False, desc="train"):
        total += train_step(model, optimizer, images.to(device), labels.to(device), mask.to(device), use_lmt, size)
        n += len(labels)
    return total / max(n, 1)


def load_backbone_weights(model, source):
    """ImageNet weights for their ResNet-101 (torchvision's V1, as their pretrained=True), a file, or random."""
    import torch

    if source == "random":
        return {"source": "random", "sha256": None}
    if source == "imagenet":
        from torchvision.models import ResNet101_Weights

        state = ResNet101_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        info = {"source": "torchvision ResNet101_Weights.IMAGENET1K_V1", "sha256": None}
    else:
        from harness.checkpoints import sha256_of

        state = torch.load(source, map_location="cpu", weights_only=True)
        info = {"source": str(source), "sha256": sha256_of(source)}
    ckpt.load_into(model.backbone.base_network, state, source)
    return info


def _check(epochs, batch_size, lr, workers, holdout):
    for name, v in (("--epochs", epochs), ("--batch-size", batch_size)):
        if v < 1:
            raise UserError(f"{name} must be at least 1 (got {v})")
    if lr <= 0:
        raise UserError(f"--lr must be positive (got {lr})")
    if workers < 0:
        raise UserError(f"--workers must be 0 or more (got {workers})")
    if not 0 < holdout < 1:
        raise UserError(f"--holdout must be a fraction between 0 and 1 (got {holdout})")


def train(coco_root, *, use_lmt=True, selection="test", epochs=PAPER["epochs"], batch_size=PAPER["batch_size"],
          lr=PAPER["lr"], seed=0, scale=PAPER["scale"], crop=PAPER["crop"], tiny=False, backbone="imagenet",
          holdout=0.1, device=None, workers=4, runs_root="runs", resume=None, limit=None, progress=True):
    """Train C-Tran, then score val2014 with the selected checkpoint; returns the run folder."""
    import torch

    from harness.ctran.data import MaskedImages, TestDraw, TrainingDraw, eval_transform, train_transform
    from harness.data.coco import check_images, load_labels
    from harness.evaluate import pick_device
    from harness.models.ctran import CTran

    _check(epochs, batch_size, lr, workers, holdout)
    if selection not in SELECTIONS:
        raise UserError(f"--selection must be one of {', '.join(SELECTIONS)} (got {selection})")
    from harness.ctran import distributed

    rank, size, device = distributed.setup(pick_device(device))
    if batch_size % size:
        raise UserError(f"--batch-size {batch_size} does not split evenly over {size} processes; pass a multiple")
    root = Path(coco_root)
    train_labels, test_labels = load_labels(root, "train2014", "annotated"), load_labels(root, "val2014", "annotated")
    check_images(root, train_labels)
    check_images(root, test_labels)
    train_rows = np.arange(len(train_labels))
    if selection == "held-out":
        train_rows, val_rows = split_rows(len(train_labels), holdout, seed)
    test_rows = np.arange(len(test_labels))
    if limit:
        train_rows, test_rows = train_rows[:limit], test_rows[:limit]
        val_rows = val_rows[:limit] if selection == "held-out" else test_rows
    elif selection == "test":
        val_rows = test_rows
    arch = {"name": "ctran", "num_labels": 80, "use_lmt": use_lmt, "heads": 4, "dropout": 0.1,
            **(TINY if tiny else {k: PAPER_ARCH[k] for k in ("blocks", "block", "layers")}), "img_size": crop}
    settings = {"model_id": base_id(use_lmt), "coco_root": str(root.resolve()), "use_lmt": use_lmt,
                "selection": selection, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                "scale": scale, "crop": crop, "arch": arch, "backbone": backbone, "holdout": holdout if
                selection == "held-out" else None, "limit": limit, "n_train": len(train_rows), "n_val": len(val_rows),
                "processes": size}
    run_dir = _open(runs_root, settings, resume) if rank == 0 else None
    if size > 1:  # every process reads the same run folder (resume state); only rank 0 writes
        import torch.distributed as dist

        shared = [run_dir]
        dist.broadcast_object_list(shared, src=0)
        run_dir = shared[0]

    torch.manual_seed(seed)  # the initial weights (their weights_init and torchvision's) are seeded too
    model = CTran(**{k: v for k, v in arch.items() if k not in ("name", "img_size")}).to(device)
    backbone_info = load_backbone_weights(model, backbone) if not (run_dir / STATE).exists() else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=5)
    state = {"epoch": 0, "best_mAP": 0.0, "best_epoch": None, "history": [], "backbone": backbone_info,
             "started_at": utc_now(), "wall_s": 0.0}
    if (run_dir / STATE).exists():  # resume after the last finished epoch
        saved = torch.load(run_dir / STATE, map_location="cpu", weights_only=True)
        state = json.loads(saved["state_json"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        ckpt.load_into(model, ckpt.read(run_dir / LAST)[0], run_dir / LAST)
        if rank == 0:
            _say(f"resuming {run_dir} after epoch {state['epoch']}/{epochs}")
    net = distributed.wrap(model, device, size)

    train_set = MaskedImages(root, train_labels, train_transform(scale, crop), TrainingDraw(use_lmt=use_lmt, seed=seed),
                             rows=train_rows)
    val_coco = test_labels if selection == "test" else train_labels
    val_set = MaskedImages(root, val_coco, eval_transform(scale, crop), TestDraw(known=0), rows=val_rows)
    train_reasons = smoke_reasons(root, arch, scale, crop, epochs, limit, backbone)  # the checkpoint carries them
    for epoch in range(state["epoch"] + 1, epochs + 1):
        t0 = time.perf_counter()
        random.seed(f"ctran-epoch:{seed}:{epoch}" + (f":{rank}" if size > 1 else ""))
        torch.manual_seed(seed * 100003 + epoch + 7919 * rank)
        train_set.epoch = epoch
        lr_now = optimizer.param_groups[0]["lr"]
        shown = progress and rank == 0
        train_loss = train_epoch(net, _loader(train_set, batch_size // size, workers, True, seed * 100003 + epoch,
                                              size, rank, epoch), optimizer, device, use_lmt, shown, size)
        logits, val_masks, rows, val_loss = predict(net, _loader(val_set, batch_size // size, workers, size=size,
                                                                 rank=rank), device, use_lmt, shown, size)
        from harness.ctran.metrics import compute_ctran_metrics

        val_map = compute_ctran_metrics(torch.sigmoid(logits).numpy(), val_coco.labels[rows], val_masks.numpy())["mAP"]
        scheduler.step(val_loss)
        if val_map is not None and val_map >= state["best_mAP"]:  # their >=: a tie goes to the later epoch
            state["best_mAP"], state["best_epoch"] = val_map, epoch
            if rank == 0:
                ckpt.save(run_dir / BEST, model, arch, {"epoch": epoch, "selection": selection, "val_mAP": val_map,
                                                        "scale": scale, "crop": crop, "smoke_reasons": train_reasons})
        state["epoch"] = epoch
        state["wall_s"] += time.perf_counter() - t0
        state["history"].append({"epoch": epoch, "lr": lr_now, "train_loss": train_loss, "val_loss": val_loss,
                                 "val_mAP": val_map})
        if rank:
            continue
        ckpt.save(run_dir / LAST, model, arch, {"epoch": epoch})
        tmp = run_dir / (STATE + ".tmp")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state_json": json.dumps(state)}, tmp)
        tmp.replace(run_dir / STATE)
        per_epoch = state["wall_s"] / epoch
        _say(f"epoch {epoch}/{epochs}  train loss {train_loss:.3f}  val loss {val_loss:.3f}  val mAP "
             f"{val_map if val_map is None else round(val_map, 2)}  lr {lr_now:g}  ETA "
             f"{(epochs - epoch) * per_epoch / 60:.1f} min")
    if rank:  # rank 0 scores the test set with the selected checkpoint and writes the record
        return None, None
    return _finish_training(run_dir, root, settings, state, test_labels, test_rows, device, workers, batch_size)


def _open(runs_root, settings, resume):
    from harness import records

    if resume:
        folder = Path(runs_root) / settings["model_id"]
        candidates = sorted(p for p in folder.glob("*") if (p / SETTINGS).is_file() and not (p / "record.json").exists())
        if resume == "auto":  # the newest unfinished run with these settings, else a new run
            same = [p for p in candidates if json.loads((p / SETTINGS).read_text()) == settings]
            return same[-1] if same else _open(runs_root, settings, None)
        run_dir = Path(resume) if resume != "latest" else (candidates[-1] if candidates else None)
        if run_dir is None or not (run_dir / SETTINGS).is_file():
            raise UserError(f"nothing to resume for {settings['model_id']} under {runs_root}; run without --resume")
        if (run_dir / "record.json").exists():
            raise UserError(f"{run_dir} is already complete; run without --resume for a new run")
        saved = json.loads((run_dir / SETTINGS).read_text())
        changed = [k for k, v in settings.items() if saved.get(k) != v]
        if changed:
            raise UserError(f"cannot resume {run_dir}: {', '.join(changed)} differ from the interrupted run; "
                            "use the same settings or start a new run")
        return run_dir
    run_dir = records.new_run_dir(runs_root, settings["model_id"])
    (run_dir / SETTINGS).write_text(json.dumps(settings, indent=2))
    return run_dir


def smoke_reasons(coco_root, arch, scale, crop, epochs=None, limit=None, backbone=None):
    from harness.data.smoke import is_smoke_root

    reasons = []
    if is_smoke_root(coco_root):
        reasons.append("smoke subset")
    if arch.get("blocks") != PAPER_ARCH["blocks"] or arch.get("block") != PAPER_ARCH["block"] \
            or arch.get("layers") != PAPER_ARCH["layers"]:
        reasons.append("not the paper's ResNet-101 C-Tran (tiny backbone setting)")
    if (scale, crop) != (PAPER["scale"], PAPER["crop"]):
        reasons.append(f"images {scale}/{crop}, not 640/576")
    if epochs is not None and epochs != PAPER["epochs"]:
        reasons.append(f"{epochs} epochs, not 100")
    if limit:
        reasons.append(f"--limit {limit}")
    if backbone == "random":
        reasons.append("random backbone weights")
    return reasons


def _finish_training(run_dir, root, settings, state, test_labels, test_rows, device, workers, batch_size):
    from harness.checkpoints import sha256_of

    if state["best_epoch"] is None:
        raise UserError(f"{run_dir}: no epoch gave a validation mAP (no positives in the validation images?)")
    reasons = smoke_reasons(root, settings["arch"], settings["scale"], settings["crop"], settings["epochs"],
                            settings["limit"], settings["backbone"])
    record = evaluate_checkpoint(run_dir / BEST, root, [base_id(settings["use_lmt"])], known_percents=[0],
                                 device=device, workers=workers, batch_size=batch_size, rows=test_rows,
                                 run_dirs=[run_dir], kind="train", extra_reasons=reasons,
                                 extra={"train": {**settings, "optimizer": "Adam, no weight decay",
                                                  "scheduler": "ReduceLROnPlateau(min, factor 0.1, patience 5) on "
                                                               "the validation unknown-label loss",
                                                  "loss": "BCE with logits, summed over unknown labels",
                                                  "selection_note": SELECTIONS[settings["selection"]],
                                                  "best_epoch": state["best_epoch"], "best_val_mAP": state["best_mAP"],
                                                  "history": state["history"], "backbone_weights": state["backbone"],
                                                  "mask_seeding": "Random('ctran-train:{seed}:{epoch}:{row}') per "
                                                  "image; theirs reseeds from the OS per image (not reproducible)",
                                                  "checkpoint": {"path": str(run_dir / BEST),
                                                                 "sha256": sha256_of(run_dir / BEST)}},
                                        "started_at": state["started_at"], "train_wall_s": state["wall_s"]})[0]
    return run_dir, record


def evaluate_checkpoint(weights, coco_root, model_ids, *, known_percents, draw="ctran", device=None, workers=4,
                        batch_size=16, rows=None, runs_root="runs", run_dirs=None, kind="eval", extra_reasons=(),
                        extra=None, manifest=None, limit=None, progress=False):
    """Score val2014 once per known-label setting (one image pass) and write one record per setting."""
    import torch

    from harness import records
    from harness.checkpoints import sha256_of
    from harness.ctran.data import MaskedImages, TestDraw, eval_transform
    from harness.ctran.metrics import compute_ctran_metrics
    from harness.data.coco import check_images, fingerprint, load_labels
    from harness.data.smoke import is_smoke_root
    from harness.evaluate import pick_device
    from harness.manifest import get_spec
    from harness.models.ctran import CTran

    device = pick_device(device)
    specs = [get_spec(m, manifest) for m in model_ids]
    state, arch, meta = ckpt.read(weights)
    arch = arch or dict(specs[0].arch)
    if bool(arch.get("use_lmt", True)) != bool(specs[0].train["use_lmt"]):
        lmt = arch.get("use_lmt", True)
        raise UserError(f"{weights} is a C-Tran trained {'with' if lmt else 'without'} label-mask training, but "
                        f"{specs[0].id} is {'without' if lmt else 'with'} it; pass that model's checkpoint "
                        f"(or evaluate {'ctran-r101-576' if lmt else 'ctran-r101-576-no-lmt'})")
    from harness.measure.measurement import SpanMeasurement
    from harness.measure.measurement import nvml_baseline_mib

    model = CTran(**{k: v for k, v in arch.items() if k not in ("name", "img_size")})
    ckpt.load_into(model, state, weights)
    baseline_mib = nvml_baseline_mib(device)  # before the model reaches the GPU
    model.to(device)
    scale, crop = meta.get("scale", PAPER["scale"]), meta.get("crop", PAPER["crop"])
    root = Path(coco_root)
    labels = load_labels(root, "val2014", "annotated")
    check_images(root, labels)
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    rows = rows[:limit] if limit else rows
    reasons = list(dict.fromkeys([*extra_reasons, *smoke_reasons(root, arch, scale, crop, limit=limit),
                                  *meta.get("smoke_reasons", [])]))
    selection = meta.get("selection") or (extra or {}).get("train", {}).get("selection")
    out = []
    for spec, percent, run_dir in zip(specs, known_percents, run_dirs or [None] * len(specs)):
        known = masks.known_count(percent, 80)
        dataset = MaskedImages(root, labels, eval_transform(scale, crop), TestDraw(known=known, draw=draw), rows=rows)
        t_setting = time.perf_counter()
        with SpanMeasurement(device, baseline_mib=baseline_mib) as meter:
            logits, mask, got_rows, loss = predict(model, _loader(dataset, batch_size, workers), device,
                                                   arch.get("use_lmt", True), progress, on_batch=meter.count)
        measured = meter.result()
        if kind == "train":
            measured["notes"].append("covers the final test pass only; the training's time is train_wall_s")
        scores = torch.sigmoid(logits).numpy()
        metrics = compute_ctran_metrics(scores, labels.labels[got_rows], mask.numpy())
        run_dir = run_dir or records.new_run_dir(runs_root, spec.id)
        records.save_arrays(run_dir, scores, labels.labels[got_rows], labels.image_ids[got_rows])
        records.write_new(run_dir / "masks.npy", lambda f, m=mask.numpy().astype(np.int8): np.save(f, m))
        fp = fingerprint(labels)
        record = {
            "schema": 1, "kind": kind, "run_id": run_dir.name,
            "model": {"id": spec.id, "family": spec.family, "arch": spec.arch, "paper": spec.paper},
            "checkpoint": {"path": str(weights), "sha256": sha256_of(weights), "pinned": False,
                           "random_weights": False, "arch": arch, "epoch": meta.get("epoch")},
            "dataset": {"name": "coco2014-val", "root": str(root.resolve()), "image_set": "annotated",
                        "n_images": len(got_rows), "fingerprint": {**fp, "n_images": len(got_rows)},
                        "smoke_subset": is_smoke_root(root)},
            "eval": {"protocol": draw, "known_percent": percent, "known_labels": known, "resolution": crop,
                     "scale": scale, "resize": "squish then centre crop", "normalize": "imagenet",
                     "batch_size": batch_size, "dtype": "float32", "amp": False, "device": device, "limit": limit,
                     "draw": {"ctran": "random.seed(sha1(np.array(transformed image)).hexdigest()), theirs",
                              "ctran-id": "Random('coco-image:<id>'): another draw than theirs"}[draw]},
            "ctran": {"selection": selection, "selection_note": SELECTIONS.get(selection), "unknown_loss": loss},
            "metrics": metrics,
            "timings": {"wall_s": time.perf_counter() - t_setting, "images_per_s": measured.get("images_per_s")},
            "measurement": measured,
            "environment": records.environment(),
            "started_at": (extra or {}).get("started_at") or utc_now(), "finished_at": utc_now(),
            "smoke": bool(reasons), "smoke_reasons": reasons,
            "files": {"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy",
                      "masks": "masks.npy"},
            **{k: v for k, v in (extra or {}).items() if k not in ("started_at",)},
        }
        records.write_record(run_dir, record)
        out.append(record)
    return out
