import json

import pytest

from harness.cli import main


@pytest.fixture(scope="session")
def trained(synth):
    """(runs folder, run folder, record) of one MLSPL AN linear training of 2 epochs on the synthetic
    features: read by the train-record tests and the training curves test (none of them writes but a
    rescore file beside the record)."""
    base, feats = synth
    runs = base / "report-runs"
    assert main(["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", str(base / "data"),
                 "--features", str(feats), "--lr", "1e-3", "--batch-size", "16", "--epochs", "2",
                 "--device", "cpu", "--out", str(runs)]) == 0
    (run_dir,) = (runs / "mlspl-an-linear").iterdir()
    return runs, run_dir, json.loads((run_dir / "record.json").read_text())
