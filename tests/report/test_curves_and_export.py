"""Training curves: TensorBoard event files that tensorboard's own reader reads, written by C-Tran and
MLSPL training as they go, plotted by the HTML report; `harness export` of a run to a local MLflow
file store and to W&B offline, and a one-line refusal when the extra is absent."""
import json
from pathlib import Path

import numpy as np
import pytest
from fake_records import eval_record, problem
from mlspl_runs import an_linear_run

from harness import records, report
from harness.cli import main
from harness.manifest import load_manifest
from harness.records.curves import TrainingCurves, read_curves

SPECS = load_manifest()


def _event_scalars(folder):
    """Every scalar of the event files in `folder`, read by tensorboard's own EventAccumulator."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_curves_are_event_files_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    with TrainingCurves(tmp_path) as curves:
        for epoch in (1, 2, 3):
            curves.epoch(epoch, train_loss=1.0 / epoch, learning_rate=1e-4, val_mAP=60.0 + epoch, val_loss=None)
    with TrainingCurves(tmp_path, name="bs8_lr0.001") as curves:
        curves.epoch(1, val_mAP=12.5)
    scalars = _event_scalars(tmp_path / "tensorboard")
    assert scalars["val_mAP"] == [(1, 61.0), (2, 62.0), (3, 63.0)] and "val_loss" not in scalars
    assert [s for s, _ in scalars["train_loss"]] == [1, 2, 3] and scalars["learning_rate"][0][1] == pytest.approx(1e-4)
    read = read_curves(tmp_path)
    assert read["val_mAP"] == [(1, 61.0), (2, 62.0), (3, 63.0)] and read["bs8_lr0.001/val_mAP"] == [(1, 12.5)]


def test_a_resumed_training_that_wrote_an_epoch_twice_reads_once(tmp_path):
    pytest.importorskip("tensorboard")
    with TrainingCurves(tmp_path) as curves:
        curves.epoch(1, val_mAP=1.0)
        curves.epoch(2, val_mAP=2.0)
    with TrainingCurves(tmp_path) as curves:  # the next session starts again at epoch 2
        curves.epoch(2, val_mAP=2.5)
        curves.epoch(3, val_mAP=3.0)
    assert read_curves(tmp_path)["val_mAP"] == [(1, 1.0), (2, 2.5), (3, 3.0)]


def test_without_tensorboard_nothing_is_written_and_a_warning_says_so(tmp_path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.setattr("harness.records.curves._warned", set())
    TrainingCurves(tmp_path).epoch(1, val_mAP=1.0)
    assert "tensorboard is not installed" in capsys.readouterr().err and not (tmp_path / "tensorboard").exists()


def test_ctran_training_writes_its_curves_live_and_the_html_report_plots_them(smoke_root, tmp_path):
    pytest.importorskip("tensorboard")
    runs = tmp_path / "runs"
    # --limit 4 at batch 4: one step an epoch (a curve point per epoch does not depend on the steps in it)
    assert main(["ctran", "train", "--coco-root", str(smoke_root), "--runs", str(runs), "--tiny", "--scale", "40",
                 "--crop", "32", "--epochs", "2", "--limit", "4", "--batch-size", "4", "--backbone", "random",
                 "--workers", "0", "-q"]) == 0
    (run_dir,) = (runs / "ctran-r101-576").iterdir()
    scalars = _event_scalars(run_dir / "tensorboard")
    history = json.loads((run_dir / "record.json").read_text())["train"]["history"]
    assert [s for s, _ in scalars["val_mAP"]] == [1, 2]
    assert [v for _, v in scalars["train_loss"]] == pytest.approx([h["train_loss"] for h in history], rel=1e-6)
    assert {"learning_rate", "val_loss"} <= set(scalars)
    data = report.collect(runs, SPECS, {})
    (entry,) = data["curves"]
    assert entry["model"] == "ctran-r101-576" and entry["smoke"] and entry["series"]["val_mAP"][0][0] == 1
    html = report.render(data, "html")
    assert "<h2>Training curves</h2>" in html and "<h3>ctran-r101-576 training</h3>" in html


def test_mlspl_training_copies_every_grid_points_curves_into_its_run(synth):
    """The train-record tests' training (tests/helpers/mlspl_runs.py): 2 epochs at batch 16, lr 1e-3."""
    pytest.importorskip("tensorboard")
    _, run_dir, _ = an_linear_run(synth)
    history = json.loads((run_dir / "record.json").read_text())["train"]["grid"][0]["history"]
    curves = read_curves(run_dir)
    assert curves["linear_bs16_lr0.001/val_mAP"] == [(e + 1, pytest.approx(h["val_mAP"], rel=1e-6))
                                                     for e, h in enumerate(history)]


@pytest.fixture
def finished_run(tmp_path):
    """An eval run folder with two epochs of curves."""
    _, labels = problem(150, 5, seed=1)
    scores = np.random.default_rng(1).random(labels.shape).astype(np.float32)
    run_dir = records.new_run_dir(tmp_path / "runs", "q2l-r101-448")
    records.write_record(run_dir, eval_record(run_dir, scores, labels))
    pytest.importorskip("tensorboard")
    with TrainingCurves(run_dir) as curves:
        curves.epoch(1, train_loss=0.5, val_mAP=40.0)
        curves.epoch(2, train_loss=0.25, val_mAP=50.0)
    return run_dir


def test_export_to_a_local_mlflow_file_store(finished_run, tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "mlruns"
    assert main(["export", str(finished_run), "--to", "mlflow", "--out", str(store)]) == 0
    assert "MLflow run" in capsys.readouterr().out
    client = mlflow.tracking.MlflowClient(store.resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    record = json.loads((finished_run / "record.json").read_text())
    assert run.data.metrics["mAP"] == pytest.approx(record["metrics"]["mAP"])
    assert run.data.tags["model"] == "q2l-r101-448" and run.data.params["eval.resolution"] == "448"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_mAP")] == [(1, 40.0), (2, 50.0)]
    artifacts = Path(client.download_artifacts(run.info.run_id, "record.json", str(tmp_path)))
    assert json.loads(artifacts.read_text()) == record


def test_export_to_wandb_offline(finished_run, tmp_path, capsys, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["export", str(finished_run), "--to", "wandb", "--out", str(tmp_path / "wb")]) == 0
    assert "(offline)" in capsys.readouterr().out
    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert (offline / "files" / "record.json").read_bytes() == (finished_run / "record.json").read_bytes()
    # wandb 0.31 reads its offline store back only through its server (`wandb sync`): the protobuf holds
    # each history item as its key and JSON value, so the curve's points are found in it as bytes
    (store,) = offline.glob("run-*.wandb")
    data = store.read_bytes()
    assert b"\x07val_mAP\x82\x01\x0240" in data and b"\x07val_mAP\x82\x01\x0250" in data and b"train_loss" in data


@pytest.mark.parametrize("target", ["mlflow", "wandb"])
def test_export_without_its_extra_is_one_line(finished_run, target, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def without_the_extra(name, *args, **kwargs):
        if name.split(".")[0] == target:
            raise ImportError(f"No module named '{target}'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_the_extra)
    assert main(["export", str(finished_run), "--to", target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pip install 'harness[{target}]'" in err[0]


def test_export_refuses_a_folder_without_a_record(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--to", "mlflow"]) == 2
    assert "holds no record.json" in capsys.readouterr().err
