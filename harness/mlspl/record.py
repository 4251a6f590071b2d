"""The run record of a finished MLSPL training (kind "train"), its arrays and checkpoints.

Checkpoints (safetensors, in the run folder):
  classifier.safetensors       MLSPLResNet50 state: `fc.weight` (C, 2048), `fc.bias` (C) after
                               linear training; every `backbone.*` and `fc.*` key after fine-tuning.
  label_estimator.safetensors  ROLE only: `logits` (training rows, C), sigmoid = label estimates,
                               rows in the order of the train split (formatted_train rows `rows`).
"""
import torch
from safetensors.torch import save_file

from harness.files import file_digest as file_sha256
from harness.metrics import compute_metrics

CLASSIFIER, ESTIMATOR = "classifier.safetensors", "label_estimator.safetensors"




def save_checkpoints(run_dir, point, train_rows):
    head = {(k if k.startswith(("fc.", "backbone.")) else f"fc.{k}"): v.contiguous() for k, v in point.head.items()}
    save_file(head, run_dir / CLASSIFIER, metadata={"format": "MLSPLResNet50 state dict"})
    paths = {"classifier": str(run_dir / CLASSIFIER)}
    if point.table is not None:
        save_file({"logits": point.table.contiguous(), "rows": torch.as_tensor(train_rows, dtype=torch.int64)},
                  run_dir / ESTIMATOR, metadata={"format": "ROLE label estimator: sigmoid(logits) = estimates"})
        paths["label_estimator"] = str(run_dir / ESTIMATOR)
    return paths


def compute_test_metrics(scores, labels, class_names):
    return compute_metrics(scores, labels, "mlspl", class_names=class_names)




def checkpoint_info(paths, random_weights):
    path = paths["classifier"]
    return {"path": path, "sha256": file_sha256(path), "pinned": False, "random_weights": random_weights}
