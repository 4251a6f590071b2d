"""`harness q2l train` against the authors' train() loop (SlongLiu/query2labels at 55eb050).

tests/data/q2l_authors/check_train_loop.py runs their main_worker() loop (patched only to run on CPU)
and the harness side by side on one machine and asserts model, EMA, AdamW state, losses and mAPs bit for
bit; it wrote train_loop.json (their per-epoch figures) and train_loop.npz (sampled trained tensors of
their model and EMA). Here the harness alone replays the same run, on whatever CPU runs the suite.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parents[1] / "data" / "q2l_authors"
_spec = importlib.util.spec_from_file_location("check_q2l_train_loop", FIXTURES / "check_train_loop.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

# Bounds on the floats. A float32 conv's or matmul's bits move with the CPU model, vector width and
# thread count, and AdamW's normalised steps carry a last-bit difference on small gradients into the
# weights: measured by tests/data/mlspl_authors-style measure_drift.py over 1 and 2 threads x ATen
# default/AVX2/AVX512 x MKL_CBWR unset/COMPATIBLE/AVX2/AVX512 (see BOUND_MEASURED). A real change (another
# seed, batch order, learning rate, EMA decay) moves these tensors by several percent.
ARRAY_BOUND = 1e-3  # of each array's largest magnitude
FIGURE_BOUND = 1e-5  # relative, each epoch's losses and mAPs
THEIR_MAPS = {"mAP": "mAP_finite_classes", "mAP_ema": "mAP_ema_finite_classes"}


@pytest.fixture(scope="module")
def harness_run():
    return check.harness_side()


def test_training_steps_equal_their_train_loop(harness_run):
    """Their loop's every epoch (train loss, val losses, regular and EMA mAP) and their trained model and
    EMA after 2 epochs, within the measured bounds; the synthetic inputs decode to their very pixels."""
    their = json.loads((FIXTURES / "train_loop.json").read_text())
    fixture = np.load(FIXTURES / "train_loop.npz")
    images, arrays, history = harness_run
    assert images == their["images_sha256"], "the synthetic JPEGs decode to other pixels here (Pillow)"
    assert len(history) == len(their["history"]) == their["epochs"]
    for o, t in zip(history, their["history"]):
        for name in ("train_loss", "val_loss", "val_loss_ema", "mAP", "mAP_ema"):
            assert o[name] == pytest.approx(t[THEIR_MAPS.get(name, name)], rel=FIGURE_BOUND), (o["epoch"], name)
    assert set(arrays) == set(fixture.files) and len(arrays) == 2 * len(check.SAMPLED)
    for key, value in arrays.items():
        expected = fixture[key]
        assert float(np.abs(value - expected).max() / np.abs(expected).max()) <= ARRAY_BOUND, key


def test_the_bound_tells_a_real_change(harness_run):
    """The EMA after 2 epochs differs from the model by far more than the bound: the test can see it."""
    _, arrays, _ = harness_run
    moved = [float(np.abs(arrays[f"model/{k}"] - arrays[f"ema/{k}"]).max() / np.abs(arrays[f"ema/{k}"]).max())
             for k, _ in check.SAMPLED]
    assert min(moved) > 10 * ARRAY_BOUND
