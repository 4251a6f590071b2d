"""Records as a table: one row per run with the conditions its figures were measured under, as
timm's results CSVs carry theirs (the Python face's `harness.read_runs`)."""
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.records.schema import Record

# column -> (section, key) of the record; a nested key is a tuple
COLUMNS: dict[str, tuple[str, str | tuple[str, ...]]] = {
    "model": ("model", "id"), "family": ("model", "family"), "protocol": ("metrics", "protocol"),
    "mAP": ("metrics", "mAP"), "image_set": ("dataset", "image_set"), "n_images": ("dataset", "n_images"),
    "resolution": ("eval", "resolution"), "precision": ("eval", "precision"), "batch_size": ("eval", "batch_size"),
    "device": ("eval", "device"), "images_per_s": ("timings", "images_per_s"),
    "peak_vram_mib": ("measurement", "peak_vram_mib"), "energy_j_per_image": ("measurement", "energy_j_per_image"),
    "checkpoint_sha256": ("checkpoint", "sha256"), "random_weights": ("checkpoint", "random_weights"),
    "paper_mAP": ("model", ("paper", "metrics", "mAP")), "torch": ("environment", "torch"),
    "cuda": ("environment", "cuda"), "harness": ("environment", "harness"), "git_commit": ("environment", "git_commit"),
}


def _get(record: Record, section: str, key: str | tuple[str, ...]) -> Any:
    value = getattr(record, section) or {}
    for part in key if isinstance(key, tuple) else (key,):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def record_row(run_dir: str | Path, record: Record) -> dict[str, Any]:
    """One run's row: its identity, figures and conditions."""
    ci = record.metrics.get("mAP_ci95") or [None, None]
    gpu = (record.environment.get("gpu") or {}).get("name")
    row: dict[str, Any] = {"run_id": record.run_id, "kind": record.kind}
    row.update({name: _get(record, *where) for name, where in COLUMNS.items()})
    row.update(mAP_ci95_low=ci[0], mAP_ci95_high=ci[1], gpu=gpu, smoke=record.smoke,
               smoke_reasons="; ".join(record.smoke_reasons), finished_at=record.finished_at, run_dir=str(run_dir))
    return row


def runs_table(found: Iterable[tuple[str | Path, Record]]) -> pd.DataFrame:
    """A DataFrame of (run_dir, record) pairs (as harness.records.iter_records yields them), oldest first."""
    rows = [record_row(run_dir, record) for run_dir, record in found]
    columns = ["run_id", "kind", *COLUMNS, "mAP_ci95_low", "mAP_ci95_high", "gpu", "smoke", "smoke_reasons",
               "finished_at", "run_dir"]
    return pd.DataFrame(rows, columns=columns)
