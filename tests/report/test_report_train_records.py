"""An MLSPL training run (kind "train") reaches the report and can be rescored."""
import json

import pytest
from mlspl_runs import an_linear_run

from harness import report
from harness.cli import main
from harness.manifest import load_manifest


@pytest.fixture
def trained(synth):
    return an_linear_run(synth)


def test_a_train_record_is_shown_in_the_report(trained):
    runs, _, record = trained
    data = report.collect(runs, load_manifest(), report.load_paper_tables(), measured_root=None)
    row = next(r for r in data["models"] if r["model"] == "mlspl-an-linear")
    assert row["run_id"] == record["run_id"] and row["mAP"] == pytest.approx(record["metrics"]["mAP"])
    assert row["status"] == "smoke"  # 2 epochs on synthetic features: flagged, never a reproduction
    assert not data["notes"]


def test_a_train_record_holds_under_verify(trained, capsys):
    """Its arrays, labels, mAP and the classifier kept in its folder are what the record says."""
    _, run_dir, _ = trained
    assert main(["verify", str(run_dir), "--no-ci"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "held          checkpoint: trained here: classifier.safetensors in the run folder" in out
    assert "less the last partial batch of 16" in out


def test_a_train_record_can_be_rescored(trained, capsys):
    _, run_dir, record = trained
    assert main(["rescore", str(run_dir), "--no-ci"]) == 0
    (written,) = run_dir.glob("rescore-mlspl*.json")
    assert json.loads(written.read_text())["metrics"]["mAP"] == pytest.approx(record["metrics"]["mAP"])


def test_the_full_label_upper_bound_is_shown_too(synth, tmp_path):
    base, feats = synth
    assert main(["mlspl", "train", "--loss", "BCE", "--mode", "linear", "--data", str(base / "data"),
                 "--features", str(feats), "--lr", "1e-3", "--batch-size", "16", "--epochs", "1",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    data = report.collect(tmp_path, load_manifest(), report.load_paper_tables(), measured_root=None)
    row = next(r for r in data["models"] if r["model"] == "mlspl-bce-linear")
    assert row["mAP"] is not None and row["status"] == "smoke" and not data["notes"]
