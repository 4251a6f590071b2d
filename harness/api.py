"""The harness from Python, as timm, lm-eval and torchmetrics are used: `import harness`, then

    model = harness.create_model("q2l-r101-448")            # released weights, verified as `harness eval` does
    records = harness.evaluate(["q2l-r101-448"], "data/coco")  # the records `harness eval` writes, as dicts
    table = harness.read_runs("runs")                        # every run, one row each, a pandas DataFrame

Each function is what the command of the same name does, with the same checks: bad input raises
`harness.UserError` (a ValueError) with one line naming the problem and the fix.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from harness import records
from harness.data.transforms import eval_transform as _transform_for
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate_many
from harness.explain.compare import compare_runs, load_run
from harness.manifest import ModelSpec, get_spec, load_manifest
from harness.metrics import THRESHOLD, Bootstrap
from harness.metrics import compute_metrics as _compute_metrics
from harness.models import build_from_arch
from harness.pretrained import build_pretrained
from harness.records.runs_table import runs_table


def list_models(manifest: str | None = None) -> list[str]:
    """The model ids of the manifest, in its order.

    >>> "q2l-r101-448" in harness.list_models()
    True
    """
    return list(load_manifest(manifest))


def create_model(model_id: str, pretrained: bool = True, weights: str | None = None, device: str = "cpu", *,
                 manifest: str | None = None, weights_dir: str | None = None,
                 trust_checkpoint: bool = False) -> torch.nn.Module:
    """The model `model_id` in eval mode, with `.spec` (its manifest entry), `.transform` (its eval
    transform: PIL image -> input tensor) and `.weights_info` (where its weights came from) attached.

    pretrained: the authors' release, fetched (or found in the cache or `weights_dir`), checked
    against the manifest's pinned sha256 or the lock file, read without running code and loaded
    strictly: the path `harness eval` takes. `weights`: a checkpoint file of your own instead.
    pretrained=False: random weights (torch's global RNG), for tests and cost measurements.

    >>> model = harness.create_model("q2l-r101-448", pretrained=False)
    >>> model.spec.eval.resolution, model.weights_info["random_weights"], model.training
    (448, True, False)

    Scoring an image as `harness eval` does: `torch.sigmoid(model(model.transform(image)[None]))`.
    """
    spec = get_spec(model_id, manifest)
    if pretrained or weights is not None:
        model, info = build_pretrained(spec, weights, weights_dir=weights_dir, trust=trust_checkpoint)
    else:
        model, info = build_from_arch(spec.arch), {"path": None, "sha256": None, "random_weights": True}
    model = model.eval().to(device)
    model.spec, model.transform, model.weights_info = spec, _transform_for(spec.eval), info
    return model


def eval_transform(model_id: str, *, manifest: str | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """The transform `harness eval` applies to a PIL image for `model_id` (the authors' squish resize,
    ToTensor, their normalisation).

    >>> from PIL import Image
    >>> harness.eval_transform("q2l-r101-448")(Image.new("RGB", (640, 480))).shape
    torch.Size([3, 448, 448])
    """
    return _transform_for(get_spec(model_id, manifest).eval)


def evaluate(model_ids: str | list[str], coco_root: str, *, manifest: str | None = None,
             **settings: Any) -> list[dict]:
    """Evaluate models on COCO val2014 as `harness eval` does (one decode per resolution, resumable
    run folders, the paper's metric); returns each model's record as a dict, with `run_dir`.

    settings: any field of harness.eval.config.EvalConfig (weights, weights_dir, batch_size, amp,
    device, limit, workers, seed, runs_root, resume, progress, ...). With several models, one model's
    failure raises for that model only after the others finished. Under torchrun every rank scores
    its share and rank 0 writes: rank 0 gets the records, the other ranks an empty list (as lm-eval's
    simple_evaluate gives None there).
    """
    ids = [model_ids] if isinstance(model_ids, str) else list(model_ids)
    specs: list[ModelSpec] = [get_spec(mid, manifest) for mid in ids]
    out = []
    for finished in evaluate_many(specs, EvalConfig(coco_root=str(coco_root), **settings)):
        if isinstance(finished, BaseException):
            raise finished
        if finished.record is None:  # another rank than 0 under torchrun: rank 0 holds the record
            continue
        out.append({**finished.record.to_json(), "run_dir": str(finished.run_dir)})
    return out


def compute_metrics(scores: np.ndarray, labels: np.ndarray, protocol: str, *, ci: Bootstrap | bool = True,
                    class_names: list | None = None, f1: str = "ml-gcn", threshold: float = THRESHOLD) -> dict:
    """Every metric of a protocol ("q2l", "asl", "mlspl") from scores (images x classes) and 0/1
    labels, exactly as `harness metrics` computes them: mAP with the protocol's tie order, its 95%
    bootstrap interval (`ci`: True, False or a metrics.Bootstrap), the F1 families (`f1`, `threshold`).

    >>> scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6]])
    >>> labels = np.array([[1, 0], [0, 1], [1, 1]])
    >>> round(harness.compute_metrics(scores, labels, "q2l", ci=False)["mAP"], 2)
    91.67
    """
    return _compute_metrics(scores, labels, protocol, ci=ci, class_names=class_names, f1=f1, threshold=threshold)


def compare(run_a: str | Path, run_b: str | Path, *, protocol: str | None = None, n_boot: int = 1000,
            n_perm: int = 1000, seed: int = 0, common_images: bool = False) -> dict:
    """Is A really better than B: `harness compare` on two run folders, as a dict (difference of
    mAP, its paired-bootstrap 95% interval, the permutation p-value, a verdict, per-class AP)."""
    return compare_runs(load_run(run_a), load_run(run_b), protocol=protocol, n_boot=n_boot, n_perm=n_perm,
                        seed=seed, common_images=common_images)


def read_runs(runs_dir: str | Path = "runs") -> pd.DataFrame:
    """Every finished run under `runs_dir` as a pandas DataFrame, one row per run with its
    conditions (model, kind, metric, CI, image set and count, resolution, precision, batch size,
    device and GPU, cost, smoke flags, checkpoint, versions, commit, folder). Damaged records are
    skipped with a warning, as `harness report` skips them.

    >>> harness.read_runs(tmp_path).empty
    True
    """
    return runs_table(records.iter_records(runs_dir))
