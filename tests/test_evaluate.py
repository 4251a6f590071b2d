"""harness eval end to end on the smoke subset, with a tiny registered model (fast on CPU)."""
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from harness.cli import main
from harness.errors import UserError
from harness.evaluate import evaluate
from harness.manifest import DEFAULT_MANIFEST, get_spec
from harness.models import register_model


class TinyNet(nn.Module):
    """Pools colour statistics: deterministic given its seed, and it can be told to fail mid-run."""

    fail_after = None  # number of forward calls after which to raise (simulates an interruption)

    def __init__(self, num_classes=80):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if TinyNet.fail_after is not None and self.calls > TinyNet.fail_after:
            raise KeyboardInterrupt
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


@register_model
def tiny_eval_net(num_classes=80, **_):
    return TinyNet(num_classes)


@pytest.fixture()
def manifest(tmp_path):
    data = yaml.safe_load(DEFAULT_MANIFEST.read_text())
    entry = data["models"]["q2l-r101-448"]
    entry["arch"] = {"name": "tiny_eval_net", "num_classes": 80}
    entry["eval"].update(resolution=32, batch_size=4)
    data["models"] = {"tiny-q2l": entry}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _eval(spec, smoke_root, runs, **kw):
    return evaluate(spec, smoke_root, weights="random", runs_root=runs, workers=0, progress=False, **kw)


def test_eval_writes_a_complete_smoke_record(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    run_dir = _eval(spec, smoke_root, tmp_path / "runs")
    record = json.loads((run_dir / "record.json").read_text())
    n = record["dataset"]["n_images"]
    assert n == 24  # the q2l image set: every val image, unannotated ones included
    scores, labels = np.load(run_dir / "scores.npy"), np.load(run_dir / "labels.npy")
    assert scores.shape == labels.shape == (n, 80) and scores.dtype == np.float32
    assert np.all((scores > 0) & (scores < 1))
    assert record["smoke"] and {"random weights", "smoke subset"} <= set(record["smoke_reasons"])
    assert record["eval"]["protocol"] == "q2l" and record["eval"]["batch_size"] == 4
    assert record["checkpoint"]["random_weights"] is True
    assert len(record["dataset"]["fingerprint"]["labels_sha256"]) == 64
    assert 0 <= record["metrics"]["mAP"] <= 100
    assert not (run_dir / "scores.partial.npy").exists()


def test_resume_after_interruption_gives_the_same_scores(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    whole = np.load(_eval(spec, smoke_root, tmp_path / "a") / "scores.npy")
    TinyNet.fail_after = 3  # three batches of 4 land, then the run is interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            _eval(spec, smoke_root, tmp_path / "b")
    finally:
        TinyNet.fail_after = None
    unfinished = next((tmp_path / "b" / "tiny-q2l").iterdir())
    assert json.loads((unfinished / "progress.json").read_text())["done"] == 12
    assert not (unfinished / "record.json").exists()
    run_dir = _eval(spec, smoke_root, tmp_path / "b", resume="latest")
    assert run_dir == unfinished
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), whole)
    assert json.loads((run_dir / "record.json").read_text())["timings"]["resumed_from_row"] == 12


def test_resume_refuses_changed_settings_and_finished_runs(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    TinyNet.fail_after = 1
    try:
        with pytest.raises(KeyboardInterrupt):
            _eval(spec, smoke_root, tmp_path / "r")
    finally:
        TinyNet.fail_after = None
    with pytest.raises(UserError, match="batch_size"):
        _eval(spec, smoke_root, tmp_path / "r", resume="latest", batch_size=8)
    done = _eval(spec, smoke_root, tmp_path / "r", resume="latest")
    with pytest.raises(UserError, match="already complete"):
        _eval(spec, smoke_root, tmp_path / "r", resume=str(done))


def test_a_new_run_never_overwrites_an_old_one(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    first = _eval(spec, smoke_root, tmp_path / "runs", limit=5)
    before = (first / "record.json").read_bytes()
    second = _eval(spec, smoke_root, tmp_path / "runs", limit=5)
    assert first != second and (first / "record.json").read_bytes() == before
    assert "--limit 5" in json.loads((second / "record.json").read_text())["smoke_reasons"]


def test_cli_eval_prints_the_result_and_flags_smoke(manifest, smoke_root, tmp_path, capsys):
    code = main(["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
                 "random", "--out", str(tmp_path / "runs"), "--workers", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "mAP" in out and "SMOKE" in out and "record.json" in out
    code = main(["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(tmp_path / "none"),
                 "--weights", "random", "--out", str(tmp_path / "runs")])
    assert code == 2 and "harness data coco" in capsys.readouterr().err
