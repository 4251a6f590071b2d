"""Records built the way an evaluation builds them, and a small scored problem: for the record,
report and comparison tests."""
import contextlib
import copy

import numpy as np
import pytest

from harness import records
from harness.data.coco import SPLIT_SIZES, labels_sha256
from harness.manifest import load_manifest
from harness.metrics import Bootstrap, compute_metrics


def eval_record(run_dir, scores, labels, *, model_id="q2l-r101-448", protocol="q2l", smoke=False,
                finished_at="2026-01-02T00:00:00+00:00", n_boot=50):
    """A record built the way an evaluation builds one: arrays first, then record.json."""
    image_ids = np.arange(len(scores)) * 7
    digests = records.save_arrays(run_dir, scores, labels, image_ids)
    return {
        "schema": records.SCHEMA, "kind": "eval", "run_id": run_dir.name,
        "model": {"id": model_id, "family": protocol, "arch": {"name": "q2l"}, "paper": {"metrics": {"mAP": 84.9}}},
        "checkpoint": {"path": None, "sha256": None, "pinned": False, "random_weights": smoke},
        "dataset": {"name": "coco2014-val", "root": "/data/coco", "image_set": "all", "n_images": len(scores),
                    "fingerprint": {"annotations_sha256": "0" * 64, "n_images": len(scores),
                                    "labels_sha256": labels_sha256(image_ids, labels)},
                    "smoke_subset": smoke},
        "eval": {"protocol": protocol, "resolution": 448, "resize": "squish", "normalize": "imagenet",
                 "batch_size": 16, "dtype": "float32", "amp": False, "device": "cuda", "limit": None},
        "metrics": compute_metrics(scores, labels, protocol, ci=Bootstrap(n_boot), class_names=[f"c{i}" for i in
                                                                                         range(scores.shape[1])]),
        "timings": {"wall_s": 100.0, "images_per_s": 405.0},
        "measurement": {"peak_vram_mib": 3500.0, "energy_j_per_image": 0.5, "reasons": {}},
        "environment": {"gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "550.1", "uuid": "GPU-x",
                                "memory_total_mib": 81559}},
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": finished_at,
        "smoke": smoke, "smoke_reasons": ["random weights"] if smoke else [],
        "files": {"scores": "scores.npy", "labels": "labels.npy", "image_ids": "image_ids.npy"},
        "digests": digests,
    }


def problem(n=120, c=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.2).astype(np.uint8)
    return np.clip(rng.random((n, c)) * 0.6 + labels * 0.4, 0, 1).astype(np.float32), labels


def full_record(run_dir, model_id, *, seed=0, signal=0.3, n_boot=20, finished_at="2026-01-02T00:00:00+00:00",
                specs=None):
    """A record of a run over the whole image set of the model's protocol (40,504 'all' or 40,137
    'annotated' val2014 images x 80 classes, or small_val2014's), written as an evaluation writes one: arrays, then a
    record whose fingerprint, counts and metrics are those of its own files. Its labels are synthetic
    and its checkpoint sha256 is made up (no release is pinned or locked in the tests)."""
    spec = (specs or load_manifest())[model_id]
    n = SPLIT_SIZES["val2014"][spec.eval.image_set == "annotated"]
    scores, labels, image_ids, labels_digest, metrics = _whole_split(n, seed, signal, n_boot, spec.eval.protocol,
                                                                     spec.eval.f1, spec.eval.threshold)
    digests = records.save_arrays(run_dir, scores, labels, image_ids)
    protocol = spec.eval.protocol
    return {
        "schema": records.SCHEMA, "kind": "eval", "run_id": run_dir.name,
        "model": {"id": model_id, "family": spec.family, "arch": spec.arch, "paper": spec.paper},
        "checkpoint": {"path": "/weights/checkpoint.pkl", "sha256": "ab" * 32, "pinned": False, "random_weights": False},
        "dataset": {"name": "coco2014-val", "root": "/data/coco", "image_set": spec.eval.image_set, "n_images": n,
                    "fingerprint": {"annotations_sha256": "0" * 64, "n_images": n,
                                    "labels_sha256": labels_digest},
                    "smoke_subset": False},
        "eval": {"protocol": protocol, "resolution": spec.eval.resolution, "resize": "squish", "normalize": "imagenet",
                 "batch_size": 16, "dtype": "float32", "amp": False, "device": "cuda", "limit": None,
                 "precision": spec.eval.precision},
        "labels": {"used": "instances json", "check": None},
        "metrics": metrics,
        "timings": {"wall_s": 100.0, "images_per_s": 405.0},
        "measurement": {"peak_vram_mib": 3500.0, "energy_j_per_image": 0.5, "reasons": {}},
        "environment": {"gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "550.1", "uuid": "GPU-x",
                                "memory_total_mib": 81559}},
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": finished_at, "smoke": False, "smoke_reasons": [],
        "files": dict(records.SCORE_FILES), "digests": digests,
    }


@contextlib.contextmanager
def small_val2014(n_all=600, n_annotated=590):
    """val2014 made this small for the harness (the image set a run must cover to count) and for
    full_record: for tests of what the report does with a whole-split run, which does not depend on the
    split's size (each whole split of 40,504 x 80 costs ~1 s: its metrics, then its mAP recomputed)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SPLIT_SIZES, "val2014", (n_all, n_annotated))
        yield


_WHOLE_SPLITS = {}


def _whole_split(n, seed, signal, n_boot, protocol, f1, threshold):
    """(scores, labels, image_ids, labels sha256, metrics) of a whole split: computed once per settings
    (0.6 s: the metrics and bootstrap over 40,504 x 80), the same values each time; the metrics copied."""
    key = (n, seed, signal, n_boot, protocol, repr(f1), repr(threshold))
    if key not in _WHOLE_SPLITS:
        rng = np.random.default_rng(seed)
        labels = (rng.random((n, 80)) < 0.03).astype(np.uint8)
        scores = np.clip(rng.random((n, 80)) * (1 - signal) + labels * signal, 0, 1).astype(np.float32)
        image_ids = np.arange(1, n + 1, dtype=np.int64) * 3
        for array in (scores, labels, image_ids):
            array.flags.writeable = False  # shared by every record made with these settings
        metrics = compute_metrics(scores, labels, protocol, ci=Bootstrap(n_boot) if n_boot else False, f1=f1,
                                  threshold=threshold)
        _WHOLE_SPLITS[key] = (scores, labels, image_ids, labels_sha256(image_ids, labels), metrics)
    scores, labels, image_ids, labels_digest, metrics = _WHOLE_SPLITS[key]
    return scores, labels, image_ids, labels_digest, copy.deepcopy(metrics)
