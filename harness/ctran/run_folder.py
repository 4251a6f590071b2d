"""C-Tran's run folder: settings.json as its config reads it (harness.records.training_run opens the folder);
a resume must repeat them field by field."""
from pathlib import Path

from harness.ctran.config import read_settings
from harness.records import SETTINGS
from harness.records import read_settings as read_settings_file
from harness.records.training_run import open_training_run


def saved_settings(run_dir):
    return read_settings(read_settings_file(Path(run_dir) / SETTINGS))


def open_run(config, settings):
    """The folder to train in (CtranTrainConfig; `settings`: what settings.json holds for this run)."""
    return open_training_run(config.runs_root, config.model_id, config.resume, settings, saved_settings)
