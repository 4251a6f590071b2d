"""A training's run folder (C-Tran, Query2Label): a new one holding settings.json, or with --resume the
interrupted one, whose settings.json must equal this run's field by field, on as many processes."""
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.distributed import refuse_another_world
from harness.errors import UserError
from harness.records.store import (
    SETTINGS,
    is_finished,
    new_run_dir,
    read_settings,
    refuse_changed_settings,
    unfinished_runs,
)


def saved_as_written(run_dir: str | Path) -> dict[str, Any]:
    return read_settings(Path(run_dir) / SETTINGS)


def open_training_run(runs_root: str | Path, model_id: str, resume: str | None, settings: Mapping[str, Any],
                      saved: Callable[[Path], Mapping[str, Any]] = saved_as_written) -> Path:
    """The folder to train in. `resume`: None (a new folder), "auto" (the newest unfinished run with
    these settings, else a new one), "latest" or a folder; `saved(run_dir)`: its settings as this
    training compares them."""
    if not resume:
        return _new(runs_root, model_id, settings)
    candidates = unfinished_runs(runs_root, model_id)
    if resume == "auto":
        same = [p for p in candidates if saved(p) == settings]
        return same[-1] if same else _new(runs_root, model_id, settings)
    run_dir = Path(resume) if resume != "latest" else (candidates[-1] if candidates else None)
    if run_dir is None or not (run_dir / SETTINGS).is_file():
        raise UserError(f"nothing to resume for {model_id} under {runs_root}; run without --resume")
    if is_finished(run_dir):
        raise UserError(f"{run_dir} is already complete; run without --resume for a new run")
    before = saved(run_dir)
    refuse_another_world(run_dir, before, settings)
    refuse_changed_settings(run_dir, before, settings)
    return run_dir


def _new(runs_root: str | Path, model_id: str, settings: Mapping[str, Any]) -> Path:
    run_dir = new_run_dir(runs_root, model_id)
    (run_dir / SETTINGS).write_text(json.dumps(settings, indent=2))
    return run_dir
