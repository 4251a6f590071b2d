"""What a `harness q2l train` run is asked to do: one frozen Q2LTrainConfig, built once by the command.

Every training value is the authors' (a Recipe, each value with its source: their log, config_new.json,
README, parser default) unless the command line overrides it (--epochs, --batch-size, --lr), which is
recorded as a deviation. The run's settings.json holds the fields that define the run; a resume
compares them field by field.
"""
import math
from dataclasses import dataclass, fields
from pathlib import Path

from harness.errors import UserError
from harness.q2l.recipe import Recipe

SELECTIONS = {"test": "selected on test (the authors' protocol: their validation loader is val2014, the paper's "
                      "test set; best epoch and early stop chosen on it)",
              "held-out": "selected on a held-out part of train2014, then scored once on val2014"}
AMP = ("auto", "off", "fp16", "bf16")
AUGMENTS = {"authors": "Resize, cutout as their runs drew it, RandAugment(), ToTensor, Normalize (theirs)",
            "none": "Resize, ToTensor, Normalize only (not theirs: a recorded deviation)"}
# Fields that move no number of the run: a resume may change them.
NOT_SETTINGS = ("device", "workers", "runs_root", "resume", "progress", "weights_dir", "manifest",
                "activation_checkpointing", "offload_ema", "offload_optimizer", "vram_budget")


def check_flags(epochs=None, batch_size=None, lr=None, seed=0, micro_batch=None, workers=0):
    """One line for a number no training can take (None: not given, the authors' value is used)."""
    for name, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--micro-batch", micro_batch)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise UserError(f"{name} must be a whole number, at least 1 (got {v})")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a positive finite number (got {lr}); the authors' is 1e-4")
    if not 0 <= seed < 2**32:  # numpy's global seed takes no other
        raise UserError(f"--seed must be a whole number from 0 to 2**32 - 1 (got {seed})")
    if workers < 0:
        raise UserError(f"--workers must be 0 or more (got {workers})")


@dataclass(frozen=True)
class Q2LTrainConfig:
    model_id: str
    coco_root: str
    recipe: Recipe
    epochs: int
    batch_size: int  # global, over every process (theirs: --batch-size)
    lr: float
    seed: int = 0
    selection: str = "test"
    holdout: float = 0.1
    smoke: bool = False
    amp: str = "auto"  # auto: the recipe's fp16 autocast on a GPU, off on CPU
    augment: str = "authors"
    backbone_weights: str = "pretrained"  # pretrained (their backbone.py's file), random, or a file
    activation_checkpointing: bool = False
    micro_batch: int | None = None  # images per forward/backward; None: the whole per-process batch
    offload_ema: bool = False
    offload_optimizer: bool = False
    vram_budget: str | None = None
    device: str | None = None
    workers: int = 4
    runs_root: str = "runs"
    resume: str | None = None
    progress: bool = True
    weights_dir: str | None = None
    manifest: str | None = None

    def __post_init__(self):
        check_flags(self.epochs, self.batch_size, self.lr, self.seed, self.micro_batch, self.workers)
        if self.selection not in SELECTIONS:
            raise UserError(f"--selection must be one of {', '.join(SELECTIONS)} (got {self.selection})")
        if not 0 < self.holdout < 1:
            raise UserError(f"--holdout must be a fraction between 0 and 1 (got {self.holdout})")
        if self.amp not in AMP:
            raise UserError(f"--amp must be one of {', '.join(AMP)} (got {self.amp})")
        if self.augment not in AUGMENTS:
            raise UserError(f"augment must be one of {', '.join(AUGMENTS)} (got {self.augment})")

    def value(self, name):
        """A training value as this run uses it: the command line's override, else the authors'."""
        overrides = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        return overrides.get(name, self.recipe[name])

    def deviations(self):
        """What this run does differently from the authors' recipe, one line each (recorded)."""
        out = [f"{name} {self.value(name)} (the authors' {self.recipe[name]}, {self.recipe.sources[name]})"
               for name in ("epochs", "batch_size", "lr") if self.value(name) != self.recipe[name]]
        if self.augment != "authors":
            out.append(f"augmentation: {AUGMENTS[self.augment]}")
        if self.backbone_weights != "pretrained":
            out.append(f"backbone weights: {self.backbone_weights}, not the authors' pretrained file")
        return out

    def settings(self):
        """What settings.json holds: the fields that define the run, the root resolved."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_SETTINGS}
        out["recipe"] = {"values": self.recipe.values, "sources": self.recipe.sources}
        out["coco_root"] = str(Path(self.coco_root).resolve())
        out["holdout"] = self.holdout if self.selection == "held-out" else None
        return out
