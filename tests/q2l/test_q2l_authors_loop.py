"""`harness q2l train` against the authors' train() loop: the fixture tests/data/q2l_authors/train_loop.json
was made by their main_mlc.py (check_train_loop.py, which asserts the two bit for bit side by side); here
the harness alone replays the same run and must give the same bits. Both run under the script's portable
numerics (MKL CBWR, ATen's and oneDNN's plain kernels, one thread), which must be set before torch loads:
here in a child process. The synthetic images are JPEGs decoded by Pillow: their sha256 is checked first,
so another decoder shows as that, not as a training difference."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[1] / "data" / "q2l_authors"
_spec = importlib.util.spec_from_file_location("check_q2l_train_loop", FIXTURES / "check_train_loop.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _harness_run():
    """The harness side of check_train_loop.py, its figures as JSON on stdout."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        coco = check.make_data(tmp)
        images = check.images_sha256(coco)
        _, saved, history = check.run_harness(check.harness_config(coco, Path(tmp) / "runs"))
    print(json.dumps({"model_sha256": check.state_sha256(saved["model"]), "ema_sha256": check.state_sha256(saved["ema"]),
                      "torch": torch.__version__, "images_sha256": images, "history": history}))


def test_training_steps_equal_their_train_loop_bit_for_bit():
    their = json.loads((FIXTURES / "train_loop.json").read_text())
    assert their["numerics"] == check.PORTABLE_NUMERICS
    env = {**os.environ, **check.PORTABLE_NUMERICS, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    assert ours["images_sha256"] == their["images_sha256"], "the synthetic JPEGs decode to other pixels here (Pillow)"
    for o, t in zip(ours["history"], their["history"], strict=True):
        assert (o["train_loss"], o["val_loss"], o["val_loss_ema"]) == (t["train_loss"], t["val_loss"], t["val_loss_ema"])
        assert o["mAP"] == pytest.approx(t["mAP_finite_classes"], rel=1e-12)
        assert o["mAP_ema"] == pytest.approx(t["mAP_ema_finite_classes"], rel=1e-12)
    assert ours["model_sha256"] == their["model_sha256"], f"model differs (torch {ours['torch']}, fixture {their['torch']})"
    assert ours["ema_sha256"] == their["ema_sha256"]


if __name__ == "__main__":
    _harness_run()
