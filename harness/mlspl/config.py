"""What one MLSPL run is asked to do, as one frozen value: built by the CLI from its flags, saved as
the run's settings.json, compared field by field when a run resumes, and embedded in the record
(its `config` section).

`None` in epochs, points, init_point or device means the paper's (or the machine's) choice;
`resolved` fills them in, so everything after it reads a config with every number set.
"""
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from harness.mlspl.losses import EXPECTED_POSITIVES

SEED = 1200  # their P['seed'] (numpy there); torch.manual_seed(SEED) is the line added to their script
DATALOADER_SEMANTICS = "torch>=1.9"  # which torch's DataLoader(shuffle=True) draws are replayed
RESOLUTION = 448
# Fields that say how a run is watched or where its record's manifest entry comes from, not what it
# computes: a resumed run may change them.
FREE_ON_RESUME = ("progress", "manifest", "runs_root")
PATHS = ("data_dir", "features_dir", "coco_root", "runs_root", "manifest")


@dataclass(frozen=True)
class TrainConfig:
    loss: str
    mode: str = "linear"  # linear | fine-tuned | linear-init
    data_dir: str | None = None  # made by `harness mlspl prepare`
    features_dir: str | None = None  # modes linear and linear-init
    coco_root: str | None = None  # images: modes fine-tuned and linear-init
    points: tuple | None = None  # ((batch size, lr), ...) in grid order; None: the paper's grid
    init_point: tuple | None = None  # linear-init: (lr, batch size) of the linear phase; None: the authors'
    epochs: int | None = None  # None: the paper's (linear 25, fine-tuned 10)
    seed: int = SEED
    resolution: int = RESOLUTION
    random_weights: bool = False  # random backbone (smoke)
    max_steps: int | None = None  # steps per epoch and per evaluation (tests, smoke)
    semantics: str = DATALOADER_SEMANTICS
    expected_positives: float = EXPECTED_POSITIVES["coco"]  # EPR's and ROLE's k
    device: str | None = None  # None or "auto": CUDA when there is one
    workers: int = 4  # loader workers: their count fixes which worker draws which image's flip
    runs_root: str = "runs"
    manifest: str | None = None  # for the record's model entry; None: the default manifest
    progress: bool = True

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def as_json(self):
        """The fields as JSON values (tuples become lists, paths absolute), for settings.json and the record."""
        fields = dataclasses.asdict(self)
        fields.update({name: str(Path(fields[name]).resolve()) for name in PATHS if fields[name] is not None})
        return json.loads(json.dumps(fields))


def differences(saved, config):
    """The fields of a saved settings.json that this config sets otherwise (fields free on resume
    and fields the saved file lacks, written before they existed, are not compared)."""
    now = config.as_json()
    return [f"{name} {saved[name]!r} there, {now[name]!r} now" for name in now
            if name in saved and name not in FREE_ON_RESUME and saved[name] != now[name]]


@dataclass(frozen=True)
class FeatureConfig:
    """How `harness mlspl extract-features` runs: the authors' transform at `resolution`, batched."""
    resolution: int = RESOLUTION
    batch_size: int = 64
    device: str = "cpu"
    workers: int | None = None  # None: every usable core (harness.data.loader); features do not depend on it
    random_weights: bool = False  # a ResNet-50 from torch.manual_seed(seed) (smoke runs; the seed is recorded)
    seed: int = 0
