"""One MLSPL training on the session's synthetic features (the `synth` fixture), trained once per
process and read by several test modules (tests/report): none of them writes into it but a rescore
file beside the record."""
import json

from harness.cli import main

_TRAINED = {}


def an_linear_run(synth):
    """(runs folder, run folder, record) of AN linear, 2 epochs at batch 16, lr 1e-3."""
    base, feats = synth
    if base not in _TRAINED:
        runs = base / "report-runs"
        assert main(["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", str(base / "data"),
                     "--features", str(feats), "--lr", "1e-3", "--batch-size", "16", "--epochs", "2",
                     "--device", "cpu", "--out", str(runs)]) == 0
        (run_dir,) = (runs / "mlspl-an-linear").iterdir()
        _TRAINED[base] = runs, run_dir
    runs, run_dir = _TRAINED[base]
    return runs, run_dir, json.loads((run_dir / "record.json").read_text())
