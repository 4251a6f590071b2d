"""A training's run folder: a new one holding settings.json, or with --resume the interrupted one,
whose settings.json must equal this run's field by field."""
import json
from pathlib import Path

from harness import records
from harness.ctran.config import read_settings
from harness.distributed import refuse_another_world
from harness.errors import UserError
from harness.records import (
    SETTINGS,
    is_finished,
    refuse_changed_settings,
    unfinished_runs,
)
from harness.records import read_settings as read_settings_file


def saved_settings(run_dir):
    return read_settings(read_settings_file(Path(run_dir) / SETTINGS))


def open_run(config, settings):
    """The folder to train in (CtranTrainConfig; `settings`: what settings.json holds for this run)."""
    runs_root, model_id, resume = config.runs_root, config.model_id, config.resume
    if not resume:
        return _new(runs_root, model_id, settings)
    candidates = unfinished_runs(runs_root, model_id)
    if resume == "auto":  # the newest unfinished run with these settings, else a new run
        same = [p for p in candidates if saved_settings(p) == settings]
        return same[-1] if same else _new(runs_root, model_id, settings)
    run_dir = Path(resume) if resume != "latest" else (candidates[-1] if candidates else None)
    if run_dir is None or not (run_dir / SETTINGS).is_file():
        raise UserError(f"nothing to resume for {model_id} under {runs_root}; run without --resume")
    if is_finished(run_dir):
        raise UserError(f"{run_dir} is already complete; run without --resume for a new run")
    saved = saved_settings(run_dir)
    refuse_another_world(run_dir, saved, settings)
    refuse_changed_settings(run_dir, saved, settings)
    return run_dir


def _new(runs_root, model_id, settings):
    run_dir = records.new_run_dir(runs_root, model_id)
    (run_dir / SETTINGS).write_text(json.dumps(settings, indent=2))
    return run_dir
