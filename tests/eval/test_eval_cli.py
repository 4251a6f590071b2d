"""`harness eval` on the command line: bad numbers are one-line errors, missing figures print n/a."""
import pytest
from conftest import tiny_manifest
from torch import nn

import harness.eval.run
from harness.cli import main
from harness.models import register_model


@register_model
def tiny_cli_net(num_classes=80, **_):
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, num_classes))


@pytest.fixture()
def manifest(tmp_path):
    return tiny_manifest(tmp_path, "tiny-cli", {"name": "tiny_cli_net", "num_classes": 80}, resolution=32, batch_size=4)


def _eval_args(manifest, smoke_root, runs, *extra):
    return ["eval", "tiny-cli", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights", "random",
            "--out", str(runs), "--workers", "0", "--no-progress", *extra]


@pytest.mark.parametrize("extra, option", [(["--batch-size", "-1"], "--batch-size"),
                                           (["--batch-size", "0"], "--batch-size"),
                                           (["--workers", "-2"], "--workers")])
def test_bad_numbers_exit_2_with_one_line(manifest, smoke_root, tmp_path, capsys, extra, option):
    code = main(_eval_args(manifest, smoke_root, tmp_path / "runs", *extra))
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_missing_ci_and_speed_print_n_a(manifest, smoke_root, tmp_path, capsys, monkeypatch):
    full = harness.eval.run.compute_metrics
    monkeypatch.setattr(harness.eval.run, "compute_metrics", lambda *a, **k: full(*a, **{**k, "ci": False}))
    code = main(_eval_args(manifest, smoke_root, tmp_path / "runs"))
    out = capsys.readouterr().out
    assert code == 0 and "95% CI n/a" in out and "SMOKE" in out
    assert "mAP n/a" not in out  # the mAP itself was computed


def test_missing_map_prints_n_a(manifest, smoke_root, tmp_path, capsys, monkeypatch):
    full = harness.eval.run.compute_metrics

    def no_positives(scores, labels, *a, **k):  # q2l protocol: mAP is null when no class has a positive
        return full(scores, labels * 0, *a, **{**k, "ci": False})

    monkeypatch.setattr(harness.eval.run, "compute_metrics", no_positives)
    code = main(_eval_args(manifest, smoke_root, tmp_path / "runs", "--limit", "3"))
    out = capsys.readouterr().out
    assert code == 0 and "mAP n/a (95% CI n/a" in out
