"""Batched inference of one model on COCO val2014, written to a resumable run folder.

Scores are fp32 sigmoid probabilities (fp16 where the authors ran the model fp16-fused), written
into a memory-mapped `scores.partial.npy` as they come; `progress.json` (rewritten atomically after
each batch) says how many rows are done, so an interrupted run resumes losing at most one batch.
When all rows are done the scores become `scores.npy`, the metrics are computed with the model's
protocol and `record.json` is written; only then are the partial scores and the progress file
removed, so a run interrupted while finishing resumes from its saved scores without running the
model again.
"""
import json
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from harness.errors import UserError

PARTIAL, PROGRESS, SETTINGS = "scores.partial.npy", "progress.json", "settings.json"


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json_atomic(path, data):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def pick_device(requested=None):
    import torch

    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return requested


def _smoke_reasons(weights_info, coco_labels, limit, smoke_root):
    from harness.data.coco import is_full_split

    reasons = []
    if weights_info["random_weights"]:
        reasons.append("random weights")
    if weights_info.get("unverified"):  # weights given by path that cannot be shown to be the release
        reasons.append(weights_info["unverified"])
    if smoke_root:
        reasons.append("smoke subset")
    elif not is_full_split(coco_labels):
        reasons.append(f"not the full COCO {coco_labels.split} ({len(coco_labels)} images)")
    if limit:
        reasons.append(f"--limit {limit}")
    return reasons


def find_resumable(runs_root, model_id):
    """The newest unfinished run folder of this model, or None."""
    folder = Path(runs_root) / model_id
    candidates = [p for p in folder.glob("*") if (p / SETTINGS).is_file() and not (p / "record.json").exists()]
    return max(candidates, key=lambda p: p.name) if candidates else None


def evaluate(spec, coco_root, *, weights=None, weights_dir=None, config=None, batch_size=None, amp=None,
             device=None, limit=None, runs_root="runs", resume=None, workers=None, trust_checkpoint=False,
             progress=True, seed=0):
    """Evaluate `spec` (a manifest ModelSpec) and return the finished run folder."""
    import torch

    from harness.batch_size import choose_batch_size
    from harness.data.authors_labels import choose_labels
    from harness.data.coco import check_images, load_labels
    from harness.measure.measurement import nvml_baseline_mib

    from harness.records import check_runs_root

    _check_numbers(batch_size, workers, limit)
    check_runs_root(runs_root)
    device = pick_device(device)
    if amp not in (None, "off") and device != "cuda":
        raise UserError("--amp needs a CUDA GPU; drop --amp to run in fp32 on CPU")
    coco_labels = load_labels(coco_root, "val2014", spec.eval.image_set)
    n_total = min(limit, len(coco_labels)) if limit else len(coco_labels)
    check_images(coco_root, coco_labels)
    label_choice = choose_labels(spec, coco_root, coco_labels, weights_dir=weights_dir)

    baseline_mib = nvml_baseline_mib(device)  # before the model reaches the GPU
    model, weights_info = _build_model(spec, weights, weights_dir, config, trust_checkpoint, device, seed)
    precision, precision_source = _choose_precision(spec, amp, device)
    model = _for_precision(model, precision)
    amp, amp_source = _choose_amp(spec, amp, weights_info.get("config"), device)
    batch_size, batch_source, deviations = choose_batch_size(spec, batch_size, weights_info.get("config"))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    settings = {
        "model_id": spec.id, "weights_sha256": weights_info["sha256"], "random_weights": weights_info["random_weights"],
        "coco_root": str(Path(coco_root).resolve()), "image_set": spec.eval.image_set, "n_images": n_total,
        "batch_size": batch_size, "amp": amp or False, "resolution": spec.eval.resolution,
        "seed": weights_info.get("seed"),
        **({"precision": precision} if precision != "fp32" else {}),  # older runs stay resumable
    }
    run_dir, done, held = _open_run(runs_root, spec.id, resume, settings, weights_info)
    with held:  # one process at a time scores this run
        return _score_and_finish(spec, coco_root, coco_labels, model, weights_info, settings, run_dir, done,
                                 dict(device=device, amp=amp, amp_dtype=amp_dtype, amp_source=amp_source,
                                      batch_size=batch_size, workers=workers, limit=limit, progress=progress,
                                      baseline_mib=baseline_mib, precision=precision,
                                      precision_source=precision_source, batch_size_source=batch_source,
                                      deviations=deviations, labels=label_choice))


def _score_and_finish(spec, coco_root, coco_labels, model, weights_info, settings, run_dir, done, opts):
    from harness.measure import EvalMeasurement
    from harness.models.backbones.tresnet import batch_norm_used

    device, amp, limit, n_total = opts["device"], opts["amp"], opts["limit"], settings["n_images"]
    num_classes = coco_labels.labels.shape[1]
    if (run_dir / "scores.npy").exists():  # an earlier session scored every row, then was stopped while finishing
        scores = _load_saved_scores(run_dir, n_total, num_classes)
    else:
        scores = _scores_memmap(run_dir, n_total, num_classes, fresh=done == 0,
                                dtype=np.float16 if opts["precision"] == "fp16-fused" else np.float32)

    started = _now()
    t0 = time.perf_counter()
    with EvalMeasurement(device, baseline_mib=opts["baseline_mib"]) as measurement:
        if done < n_total:
            done = _infer(model, spec.id, coco_root, coco_labels, spec.eval, range(done, n_total), scores, run_dir,
                          device=device, amp=amp, amp_dtype=opts["amp_dtype"], batch_size=opts["batch_size"],
                          workers=opts["workers"], measurement=measurement, progress=opts["progress"],
                          half=opts["precision"] == "fp16-fused")
    if done != n_total:  # the loader ended early: a bug, never a result
        raise RuntimeError(f"{run_dir}: {done} of {n_total} rows scored; resume it with --resume {run_dir}")
    measured = measurement.result()
    if measurement.n_images == 0:
        measured["notes"].append("every row was scored by an earlier session that was stopped before its "
                                 "record was written; its speed and memory were not kept")
    context = {"weights_info": weights_info, "settings": settings, "started": started, "device": device,
               "batch_size": opts["batch_size"], "batch_size_source": opts["batch_size_source"],
               "deviations": opts["deviations"], "amp": amp, "amp_source": opts["amp_source"], "limit": limit,
               "precision": opts["precision"], "precision_source": opts["precision_source"],
               "labels": opts["labels"], "batch_norm": batch_norm_used(model, device),
               "wall_s": time.perf_counter() - t0, "measured": measured}
    final_scores = np.array(scores)
    del scores  # closes the memory map of the partial file
    _finish(spec, coco_root, coco_labels, final_scores, run_dir, context)
    return run_dir


def _check_numbers(batch_size, workers, limit):
    """Numbers from the command line that the loader would reject with a traceback, or misread."""
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size}); leave it out for the paper's")
    if workers is not None and workers < 0:
        raise UserError(f"--workers must be 0 or more (got {workers}); 0 loads images in the main process")
    if limit is not None and limit < 1:
        raise UserError("--limit must be a positive number of images")


def _infer(model, model_id, coco_root, coco_labels, eval_spec, rows, scores, run_dir, *, device, amp, amp_dtype,
           batch_size, workers, measurement, progress, half=False):
    """Score `rows` into `scores`, recording progress after each batch; returns the rows done.
    half: the model is in fp16 (fp16-fused): fp16 inputs, and the sigmoid of the fp16 logits kept
    in fp16, as ML-Decoder's validate.py (`Sig(model(input.half()))`)."""
    import torch

    from harness.data.dataset import CocoImages, UnreadableImages
    from harness.data.loader import make_loader
    from harness.data.transforms import resize_uint8, to_model_input

    dataset = CocoImages(coco_root, coco_labels, resize_uint8(eval_spec.resolution), indices=rows)
    loader = make_loader(dataset, batch_size, device, workers)
    done = rows.start
    bar = _progress_bar(len(scores), done, model_id, progress)
    with torch.inference_mode(), bar:
        for batch in loader:
            if isinstance(batch, UnreadableImages):
                raise UserError(_unreadable_message(batch, coco_root, coco_labels, run_dir))
            images, index = batch
            images = to_model_input(images.to(device, non_blocking=True), eval_spec.normalize)
            images = images.half() if half else images  # fp16-fused: the normalised float32, rounded once
            with torch.autocast(device_type=device, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)
                logits = logits if half else logits.float()
            if not bool(torch.isfinite(logits).all()):  # one sync per batch; .cpu() below syncs anyway
                raise UserError(_non_finite_message(model_id, "fp16 (fp16-fused)" if half else amp, index.tolist(),
                                                    coco_labels.image_ids))
            scores[index.numpy()] = torch.sigmoid(logits).cpu().numpy()  # sigmoid in the logits' dtype, as the authors
            scores.flush()
            done = int(index[-1]) + 1
            _write_json_atomic(run_dir / PROGRESS, {"done": done, "updated_at": _now()})
            measurement.count(len(index))
            bar.update(len(index))
    return done


def _unreadable_message(bad, coco_root, coco_labels, run_dir):
    """One line: which images, why, how to get them again, and that the run resumes."""
    folder = Path(coco_root) / coco_labels.split
    named = "; ".join(f"{folder / name} (COCO id {int(coco_labels.image_ids[row])}): {why}"
                      for row, name, why in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    return (f"{len(bad)} image(s) cannot be decoded: {named}; delete them and run `harness data coco --root "
            f"{coco_root} --download` to get them again (`--verify-images` checks every file), then continue "
            f"with `--resume {run_dir}`")


def _non_finite_message(model_id, amp, rows, image_ids):
    """One line: which model, which images, and what to do (the batch is not saved)."""
    where = f"rows {rows[0]}-{rows[-1]}, COCO image ids {int(image_ids[rows[0]])}-{int(image_ids[rows[-1]])}"
    if amp:
        fix = (f"{amp} probably overflowed: run again with `--amp off` (fp32; a new run, since precision is "
               f"part of this run's settings)")
    else:
        fix = (f"it ran in fp32, so the checkpoint may be broken: check it against the manifest "
               f"(`harness download {model_id}`) or pass the released file")
    return f"{model_id} returned NaN or inf scores for the batch of {where}; {fix}"


def _finish(spec, coco_root, coco_labels, scores, run_dir, ctx):
    """Saved arrays, metrics, record; the partial scores go only once the record is written."""
    from harness import records
    from harness.data.coco import fingerprint
    from harness.data.smoke import is_smoke_root
    from harness.metrics import compute_metrics

    n_total = len(scores)
    labels = ctx["labels"].labels[:n_total]  # the authors' label file where it differs from the json
    records.save_arrays(run_dir, scores, labels, coco_labels.image_ids[:n_total], keep_equal=True)
    metrics = compute_metrics(scores, labels, spec.eval.protocol, class_names=coco_labels.category_names,
                              f1=spec.eval.f1, threshold=spec.eval.threshold)
    weights_info, measured = ctx["weights_info"], ctx["measured"]
    reasons = _smoke_reasons(weights_info, coco_labels, ctx["limit"], is_smoke_root(coco_root))
    record = {
        "schema": 1,
        "kind": "eval",
        "run_id": run_dir.name,
        "model": {"id": spec.id, "family": spec.family, "arch": spec.arch, "paper": spec.paper},
        "checkpoint": weights_info,
        "dataset": {
            "name": "coco2014-val", "root": str(Path(coco_root).resolve()), "image_set": spec.eval.image_set,
            "n_images": n_total, "fingerprint": fingerprint(coco_labels), "smoke_subset": is_smoke_root(coco_root),
        },
        "eval": {**asdict(spec.eval), "batch_size": ctx["batch_size"], "batch_size_source": ctx["batch_size_source"],
                 "deviations": ctx["deviations"], "dtype": str(scores.dtype),
                 "amp": ctx["amp"] or False, "amp_source": ctx["amp_source"], "precision": ctx["precision"],
                 "precision_source": ctx["precision_source"], "device": ctx["device"], "limit": ctx["limit"],
                 **({"batch_norm": ctx["batch_norm"]} if ctx["batch_norm"] else {})},
        "metrics": metrics,
        "labels": ctx["labels"].summary(scores, spec.eval.protocol),
        "timings": {"wall_s": ctx["wall_s"], "images_per_s": measured.get("images_per_s"),
                    "resumed_from_row": ctx["settings"].get("resumed_from_row", 0)},
        "measurement": measured,
        "environment": records.environment(),
        "started_at": json.loads((run_dir / SETTINGS).read_text()).get("started_at", ctx["started"]),
        "finished_at": _now(),
        "smoke": bool(reasons),
        "smoke_reasons": reasons,
        "files": {"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy"},
    }
    records.write_record(run_dir, record)
    for leftover in (PARTIAL, PROGRESS, ".in-progress"):  # the lock file goes too: the record now refuses a resume
        (run_dir / leftover).unlink(missing_ok=True)


def _load_saved_scores(run_dir, n, c):
    scores = np.load(run_dir / "scores.npy")
    if scores.shape != (n, c):
        raise UserError(f"{run_dir / 'scores.npy'} holds {scores.shape}, not ({n}, {c}); start a new run")
    return scores


def _choose_amp(spec, asked, config_path, device):
    """(amp, why): the user's --amp wins; else the authors' config (their inference script ran under
    autocast exactly when its `amp` was set), else the manifest. CPU runs fp32 and says so."""
    from harness.checkpoints import read_config

    if asked is not None:
        return (False if asked == "off" else asked), "--amp"
    if config_path and read_config(config_path).get("amp") is True:
        if device == "cuda":
            return "fp16", "config_new.json amp=true (the authors' inference ran under fp16 autocast)"
        print(f"{spec.id}: config_new.json asks for AMP (CUDA fp16 autocast); running fp32 on CPU instead",
              file=sys.stderr)
        return False, "config_new.json amp=true, but CUDA autocast is impossible on CPU: ran fp32"
    if spec.eval.amp:
        return ("fp16" if device == "cuda" else False), "manifest eval.amp"
    return False, "fp32 (manifest)"


def _choose_precision(spec, asked_amp, device):
    """(precision, why): the manifest's. fp16-fused (ML-Decoder's validate.py: batch norm folded, then
    `.half()`) is a CUDA path: on CPU the fused model runs in fp32 (`fp32-fused`, said and recorded);
    `--amp` asks for the plain model under autocast (or in fp32 with `--amp off`) instead."""
    if spec.eval.precision == "fp32":
        return "fp32", "manifest"
    if asked_amp is not None:
        return "fp32", f"--amp {asked_amp} given: the unfused model, not the authors' fp16-fused run"
    if device != "cuda":
        print(f"{spec.id}: its authors ran it fp16-fused on a GPU; on CPU the fused model runs in fp32",
              file=sys.stderr)
        return "fp32-fused", "fp16-fused needs CUDA: on CPU the batch-norm-fused model ran in fp32"
    return "fp16-fused", "manifest eval.precision (as the authors' validate.py)"


def _for_precision(model, precision):
    from harness.models.backbones.tresnet import fuse_bn

    if precision == "fp32":
        return model
    model = fuse_bn(model)
    return model.half() if precision == "fp16-fused" else model


def _build_model(spec, weights, weights_dir, config, trust, device, seed):
    import torch

    from harness.pretrained import build_pretrained
    from harness.models import build_from_arch

    if weights == "random":  # seeded, so a smoke run is repeatable and a resume continues the same model
        info = {"path": None, "sha256": None, "pinned": False, "random_weights": True, "seed": seed}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_from_arch(spec.arch)
        return model.eval().to(device), info
    model, info = build_pretrained(spec, weights, config, weights_dir=weights_dir, trust=trust)
    return model.eval().to(device), info


def _open_run(runs_root, model_id, resume, settings, weights_info):
    """(run folder, its count of finished rows, its held lock): a new folder, or the one to resume."""
    from harness import records

    if resume:
        run_dir = find_resumable(runs_root, model_id) if resume == "latest" else Path(resume)
        if run_dir is None or not (run_dir / SETTINGS).is_file():
            raise UserError(f"nothing to resume for {model_id} under {runs_root}; run without --resume")
        held = records.hold_run(run_dir)  # before reading its state: another process may be changing it
        if (run_dir / "record.json").exists():
            held.close()
            raise UserError(f"{run_dir} is already complete; run without --resume for a new run")
        saved = json.loads((run_dir / SETTINGS).read_text())
        changed = [k for k, v in settings.items() if saved.get(k) != v]
        if changed:
            held.close()
            raise UserError(f"cannot resume {run_dir}: {', '.join(changed)} differ from the interrupted run; "
                            f"use the same settings or start a new run")
        settings["resumed_from_row"] = done = _rows_done(run_dir, settings["n_images"])
        return run_dir, done, held
    run_dir = records.new_run_dir(runs_root, model_id)
    held = records.hold_run(run_dir)
    _write_json_atomic(run_dir / SETTINGS, {**settings, "started_at": _now()})
    return run_dir, 0, held


def _rows_done(run_dir, n_total):
    """Finished rows, as progress.json counts them; they exist only while their scores do."""
    if (run_dir / "scores.npy").exists():  # every row was scored, then the finish was interrupted
        return n_total
    progress = run_dir / PROGRESS
    if not (progress.is_file() and (run_dir / PARTIAL).is_file()):
        return 0
    return json.loads(progress.read_text())["done"]


def _scores_memmap(run_dir, n, c, fresh, dtype=np.float32):
    path = run_dir / PARTIAL
    if fresh or not path.exists():
        scores = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n, c))
        scores[:] = np.nan  # unfinished rows stay visibly unscored
        return scores
    return np.load(path, mmap_mode="r+")


def _progress_bar(total, done, name, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, desc=name, unit="img", disable=not enabled, dynamic_ncols=True)
