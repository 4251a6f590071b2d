"""The whole Query2Label job: for each model get the checkpoint and evaluate it (`harness reproduce`
writes the report after).

Models whose complete, non-smoke run already exists are skipped; a model that fails does not
stop the others, and every failure is listed at the end with its reason.
"""
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from harness.data.coco import SPLIT_SIZES, annotation_path, check_images, load_labels
from harness.distributed import World, pick_device
from harness.errors import UserError, run_each
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate_many
from harness.manifest import ModelSpec, load_manifest, resolve_id
from harness.models import build_from_arch
from harness.pretrained import release_files
from harness.records import Reproduction, check_runs_root, complete_run

logger = logging.getLogger(__name__)


def estimate_cpu_hours(spec: ModelSpec, n_images: int, batch_size: int) -> float:
    """Time one synthetic batch on CPU and extrapolate (said before a long CPU run starts)."""
    model = build_from_arch(spec.arch).eval()
    x = torch.rand(batch_size, 3, spec.eval.resolution, spec.eval.resolution)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        per_image = (time.perf_counter() - t0) / batch_size
    return per_image * n_images / 3600


def reproduce_q2l(config: EvalConfig, *, models: Sequence[str] | None = None, manifest: str | Path | None = None,
                  force: bool = False) -> Reproduction:
    """Every chosen model (default: the Query2Label tables' six and the ASL baseline) evaluated as
    `config` (an EvalConfig) asks, complete runs skipped unless `force`; its Reproduction (the
    command then writes the report)."""
    specs = load_manifest(manifest)
    chosen = [resolve_id(m, specs) or m for m in models] if models else [
        m for m, s in specs.items() if s.paper.get("csv", "").startswith("q2l_")]
    unknown = [m for m in chosen if m not in specs]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; `harness models` lists the known ones")
    coco_root, runs_root = config.coco_root, config.runs_root
    if not annotation_path(coco_root).is_file():
        raise UserError(f"COCO val2014 is not under {coco_root}; get it with "
                        f"`harness data coco --root {coco_root} --download` (or set COCO_ROOT=DIR)")
    check_images(coco_root, load_labels(coco_root, "val2014", "all"))
    check_runs_root(runs_root)
    device = pick_device(config.device)

    def existing_run(spec: ModelSpec) -> Path | None:
        return None if force else complete_run(runs_root, spec.id, config.batch_size, config.amp)

    to_run = [specs[mid] for mid in chosen if not existing_run(specs[mid])]
    missing = _missing_weights(to_run, config.weights_dir)  # every input checked before any model is built
    if device == "cpu" and len(missing) < len(to_run):
        logger.info("No CUDA GPU visible: running on CPU. Estimated time per model (one synthetic batch, extrapolated):")
        for spec in to_run:
            if spec.id not in missing:
                n = config.limit or SPLIT_SIZES["val2014"][spec.eval.image_set == "annotated"]
                hours = _hours(estimate_cpu_hours(spec, n, config.batch_size or spec.eval.batch_size))
                logger.info(f"  {spec.id}: about {hours}")

    runnable = [spec for spec in to_run if spec.id not in missing]
    results = {}
    if runnable:  # one decode of the images per resolution for all of them
        try:
            results = dict(zip([s.id for s in runnable], evaluate_many(runnable, config)))
        except Exception as e:  # one model alone raises its error: it is that model's failure
            results = {runnable[0].id: e} if len(runnable) == 1 else {s.id: e for s in runnable}

    if not World.declared().main:  # torchrun: rank 0 reports (every rank scored its shard)
        failed = [(mid, str(r)) for mid, r in results.items() if isinstance(r, BaseException)]
        return Reproduction(chosen, failed, False)

    def job(spec: ModelSpec) -> Path:
        existing = existing_run(spec)
        if existing and spec.id not in results:
            logger.info(f"{spec.id}: complete run exists ({existing}); skipped (use --force to run again)")
            return existing
        if spec.id in missing:
            raise missing[spec.id]
        if isinstance(results[spec.id], BaseException):
            raise results[spec.id]
        return results[spec.id].run_dir

    return Reproduction(chosen, run_each([(mid, lambda spec=specs[mid]: job(spec)) for mid in chosen]), True)


def _missing_weights(specs: Iterable[ModelSpec], weights_dir: str | None) -> dict[str, UserError]:
    """{model id: UserError} for the models whose release cannot be had (fetched now when it can)."""
    missing = {}
    for spec in specs:
        try:
            release_files(spec, weights_dir=weights_dir)
        except UserError as e:
            missing[spec.id] = e
            logger.warning(f"{spec.id}: {e}")
    return missing


def _hours(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 0.1 else f"{hours * 60:.0f} min"
