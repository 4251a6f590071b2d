"""Records built the way an evaluation builds them, and a small scored problem: for the record,
report and comparison tests."""
import numpy as np

from harness import records
from harness.metrics import Bootstrap, compute_metrics


def eval_record(run_dir, scores, labels, *, model_id="q2l-r101-448", protocol="q2l", smoke=False,
                finished_at="2026-01-02T00:00:00+00:00", n_boot=50):
    """A record built the way an evaluation builds one: arrays first, then record.json."""
    digests = records.save_arrays(run_dir, scores, labels, np.arange(len(scores)) * 7)
    return {
        "schema": records.SCHEMA, "kind": "eval", "run_id": run_dir.name,
        "model": {"id": model_id, "family": protocol, "arch": {"name": "q2l"}, "paper": {"metrics": {"mAP": 84.9}}},
        "checkpoint": {"path": None, "sha256": None, "pinned": False, "random_weights": smoke},
        "dataset": {"name": "coco2014-val", "root": "/data/coco", "image_set": "all", "n_images": len(scores),
                    "fingerprint": {"annotations_sha256": "0" * 64, "n_images": len(scores), "labels_sha256": "1" * 64},
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
