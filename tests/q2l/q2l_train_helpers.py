"""Shared builders of the Query2Label training tests: a tiny synthetic COCO and a smoke config."""
import atexit
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from unittest import mock

from harness.data import smoke
from harness.manifest import get_spec
from harness.q2l.config import Q2LTrainConfig
from harness.q2l.recipe import Recipe, load_recipe

# The --smoke TResNet-L (an eighth of its width): a 4 MB state.pt where the --smoke ResNet-101 (full-width
# stages) writes 130 MB, and a quarter of its CPU time an epoch. For the tests whose property holds for
# any backbone (resume, refusals, memory wiring).
SMALL = "q2l-tresl-448"
# The --smoke Swin (LayerNorm only): like ResNet-101's FrozenBatchNorm, no layer sees the batch, so a
# batch split over processes or micro-batches trains as the whole batch; a sixteenth of its state.pt.
SWIN = "q2l-swinl-384"

_MADE = {}  # (n_val, n_train, seed) -> a subset made once in this process

# Photos a quarter of the smoke subset's sides (160 x 120 for 640 x 480): every one still larger than the
# 64 px the --smoke models read, so the loaders resize, convert and augment them as they do COCO's; a
# sixteenth of the decoding and resizing, which was a quarter of a small training's CPU time.
SMALL_SIZES = tuple((w // 4, h // 4) for w, h in smoke.SIZES)


def tiny_coco(folder, n_val=8, n_train=16, seed=0):
    """make_smoke's subset (SMALL_SIZES photos) in `folder`: made once per settings and copied after (a seed
    gives byte-identical files, so a copy is the subset it would write)."""
    key = (n_val, n_train, seed)
    if key not in _MADE:
        made = Path(tempfile.mkdtemp(prefix="tiny-coco-"))
        atexit.register(shutil.rmtree, made, ignore_errors=True)
        with mock.patch.object(smoke, "SIZES", SMALL_SIZES):
            _MADE[key] = smoke.make_smoke(made / "coco", n_val=n_val, n_train=n_train, seed=seed)
    shutil.copytree(_MADE[key], folder, dirs_exist_ok=True)
    return Path(folder)


def without_drop_path(monkeypatch):
    """Swin's DropPath off (as dropout 0 for the transformer): a split batch draws other masks."""
    from harness.q2l import backbones

    monkeypatch.setattr(backbones, "SWIN_DROP_PATH", 0.0)


def smoke_config(coco_root, runs_root, model_id="q2l-r101-448", recipe_changes=None, **changes):
    """A --smoke config (tiny backbone of the model's family, CPU, 2 epochs, batch 8, their transform off)."""
    recipe = load_recipe(get_spec(model_id), fetch_files=False)
    if recipe_changes:
        recipe = Recipe({**recipe.values, **recipe_changes}, recipe.sources, recipe.world_size, recipe.notes)
    base = dict(model_id=model_id, coco_root=str(coco_root), recipe=recipe, epochs=2, batch_size=8,
                lr=recipe["lr"], smoke=True, augment="none", backbone_weights="random", device="cpu", workers=0,
                runs_root=str(runs_root), progress=False)
    return replace(Q2LTrainConfig(**base), **changes) if changes else Q2LTrainConfig(**base)
