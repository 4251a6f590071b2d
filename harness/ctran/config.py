"""What a C-Tran run is asked to do: a training (CtranTrainConfig) or a scoring of a checkpoint (CtranEvalConfig).

A training's settings.json holds the config's fields that define the run (not where it runs, how
many loader processes, where runs go, whether to resume or show progress) and what the run found
(image counts, processes); a resume compares them field by field.
"""
import math
from dataclasses import dataclass, fields
from pathlib import Path

from harness.errors import UserError

PAPER = {"epochs": 100, "batch_size": 16, "lr": 1e-5, "scale": 640, "crop": 576}
TINY = {"blocks": [1, 1, 1, 1], "block": "basic", "layers": 1}  # smoke runs only
PAPER_ARCH = {"blocks": [3, 4, 23, 3], "block": "bottleneck", "layers": 3, "heads": 4}
SELECTIONS = {"test": "selected on test (the authors' protocol: their validation loader is val2014)",
              "held-out": "selected on a held-out part of train2014"}
NOT_SETTINGS = ("device", "workers", "runs_root", "resume", "progress")  # they move no number of the run


def base_id(use_lmt):
    return "ctran-r101-576" if use_lmt else "ctran-r101-576-no-lmt"


@dataclass(frozen=True)
class CtranTrainConfig:
    """`harness ctran train`: the authors' main.py settings by default."""
    coco_root: str
    use_lmt: bool = True
    selection: str = "test"
    epochs: int = PAPER["epochs"]
    batch_size: int = PAPER["batch_size"]
    lr: float = PAPER["lr"]
    seed: int = 0
    scale: int = PAPER["scale"]
    crop: int = PAPER["crop"]
    tiny: bool = False
    backbone: str = "imagenet"
    holdout: float = 0.1
    limit: int | None = None
    device: str | None = None
    workers: int = 4
    runs_root: str = "runs"
    resume: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be a positive number of images")
        for name, v in (("--epochs", self.epochs), ("--batch-size", self.batch_size), ("--scale", self.scale),
                        ("--crop", self.crop)):
            if v < 1:
                raise UserError(f"{name} must be at least 1 (got {v})")
        if not (math.isfinite(self.lr) and self.lr > 0):  # nan > 0 is False, but so is nan <= 0
            raise UserError(f"--lr must be a positive finite number (got {self.lr}); theirs is {PAPER['lr']}")
        if self.crop > self.scale:
            raise UserError(f"--crop {self.crop} is larger than --scale {self.scale}: the crop would be zero-padded; "
                            f"pass --crop <= --scale (theirs: --scale {PAPER['scale']} --crop {PAPER['crop']})")
        if not 0 <= self.seed < 2**32:  # numpy's RandomState (the held-out split) takes no other
            raise UserError(f"--seed must be a whole number from 0 to 2**32 - 1 (got {self.seed})")
        if self.workers < 0:
            raise UserError(f"--workers must be 0 or more (got {self.workers})")
        if not 0 < self.holdout < 1:
            raise UserError(f"--holdout must be a fraction between 0 and 1 (got {self.holdout})")
        if self.selection not in SELECTIONS:
            raise UserError(f"--selection must be one of {', '.join(SELECTIONS)} (got {self.selection})")
        if self.backbone not in ("imagenet", "random") and not Path(self.backbone).is_file():
            raise UserError(f"--backbone {self.backbone} names no file (nor imagenet or random); pass imagenet, "
                            f"random, or a ResNet-101 .pth file")

    @property
    def model_id(self):
        return base_id(self.use_lmt)

    @property
    def arch(self):
        """The model's architecture as the checkpoints carry it."""
        blocks = TINY if self.tiny else {k: PAPER_ARCH[k] for k in ("blocks", "block", "layers")}
        return {"name": "ctran", "num_labels": 80, "use_lmt": self.use_lmt, "heads": 4, "dropout": 0.1, **blocks,
                "img_size": self.crop}

    def settings(self):
        """The fields that define the run, as settings.json holds them: the root resolved, the
        hold-out fraction only where a part is held out."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_SETTINGS}
        out["coco_root"] = str(Path(self.coco_root).resolve())
        out["holdout"] = self.holdout if self.selection == "held-out" else None
        return out


def read_settings(data):
    """A settings.json as this code writes it; one written before the config existed had the
    architecture and model id (both follow from use_lmt, tiny, crop) instead of `tiny`."""
    if "arch" not in data:
        return data
    old = dict(data)
    arch, _ = old.pop("arch"), old.pop("model_id", None)
    old["tiny"] = all(arch.get(k) == v for k, v in TINY.items())
    return old


@dataclass(frozen=True)
class CtranEvalConfig:
    """Scoring a C-Tran checkpoint on val2014, once per known-label setting (one record each)."""
    weights: str
    coco_root: str
    model_ids: tuple
    known_percents: tuple
    draw: str = "ctran"
    device: str | None = None
    workers: int | None = None  # None: every core this process may use (scoring draws nothing in them)
    batch_size: int = 16
    runs_root: str = "runs"
    manifest: str | None = None
    limit: int | None = None
    progress: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"--workers must be 0 or more (got {self.workers}); 0 loads images in the main process")
        if self.limit is not None and self.limit < 1:
            raise UserError("--limit must be a positive number of images")
