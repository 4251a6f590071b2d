"""Training curves as TensorBoard event files: every training writes them into its run folder as it
goes (point `tensorboard --logdir RUN/tensorboard` at it), and the report and `harness export` read them.

Writing, from a training loop (one process: under torchrun, rank 0 only):

    curves = TrainingCurves(run_dir)                  # events in run_dir/tensorboard/
    curves = TrainingCurves(work_dir, name="bs8_lr0.001")  # or a sub-folder per grid point
    curves.epoch(1, train_loss=0.41, learning_rate=1e-4, val_mAP=72.3, val_loss=0.09)
    curves.close()                                    # or: with TrainingCurves(run_dir) as curves: ...

`epoch` is the epoch just finished, counted from 1, and each keyword one scalar at that step. The
names are those the Query2Label authors' main_mlc.py wrote (train_loss, learning_rate, val_loss,
val_mAP, val_mAP_ema, ...); any other name is written as given. Each epoch is flushed at once, so
TensorBoard shows it live. The writer is torch.utils.tensorboard's SummaryWriter, which needs the
`tensorboard` package: without it nothing is written and a warning says so once.

Reading, torch-free (tensorboard's own EventAccumulator):

    read_curves(run_dir) -> {"val_mAP": [(1, 70.2), (2, 72.3)], "bs8_lr0.001/val_mAP": [...], ...}

every scalar of every event file under run_dir/tensorboard/ (a sub-folder's tags prefixed by its
name), one value per step (the last written: a resumed run may have written an epoch twice);
{} when there is no such folder, or tensorboard is not installed (a warning says so once).
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

FOLDER = "tensorboard"
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


class TrainingCurves:
    """Per-epoch scalars of one training (or one grid point) as TensorBoard event files."""

    def __init__(self, run_dir: str | Path, name: str | None = None) -> None:
        self.folder = Path(run_dir) / FOLDER / (name or "")
        try:
            from torch.utils.tensorboard import SummaryWriter  # lazy: torch, and the optional tensorboard package
        except ImportError:
            _warn_once("write", "tensorboard is not installed: no training curves are written "
                                "(pip install tensorboard)")
            self.writer = None
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def epoch(self, epoch: int, **scalars: float | None) -> None:
        """One point per scalar at step `epoch` (counted from 1); None values are left out."""
        if self.writer is None:
            return
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, float(value), int(epoch))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> TrainingCurves:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.close()
        return False


def read_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...] by step} of every event file under run_dir/tensorboard/."""
    root = Path(run_dir) / FOLDER
    folders = sorted({p.parent for p in root.rglob("events.out.tfevents.*")}) if root.is_dir() else []
    if not folders:
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import (  # lazy: optional, and slow to load
            EventAccumulator,
        )
    except ImportError:
        _warn_once("read", f"tensorboard is not installed: the training curves in {root} are not read "
                           f"(pip install tensorboard)")
        return {}
    curves = {}
    for folder in folders:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
        events.Reload()
        prefix = "" if folder == root else folder.relative_to(root).as_posix() + "/"
        for tag in events.Tags()["scalars"]:
            by_step = {e.step: e.value for e in events.Scalars(tag)}  # the last value written at a step wins
            curves[prefix + tag] = sorted(by_step.items())
    return curves


def copy_curves(source_dir: str | Path, run_dir: str | Path) -> None:
    """Copy a work folder's curves (source_dir/tensorboard) into a finished run's folder."""
    source = Path(source_dir) / FOLDER
    if source.is_dir():
        shutil.copytree(source, Path(run_dir) / FOLDER, dirs_exist_ok=True)
