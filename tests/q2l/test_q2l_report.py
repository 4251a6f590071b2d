"""Query2Label training records reach the report in their own table, never as a release evaluation."""
from harness import report
from harness.manifest import load_manifest
from harness.records import Record, new_run_dir, write_record


def _train_record(run_dir, selection, mAP, smoke_reasons=(), stopped=None):
    return Record(kind="train", run_id=run_dir.name, model={"id": "q2l-r101-448", "family": "q2l"},
                  started_at="2026-01-01T00:00:00+00:00", finished_at=f"2026-01-0{2 if not smoke_reasons else 1}T00:00:00+00:00",
                  smoke_reasons=list(smoke_reasons), metrics={"mAP": mAP}, eval={"protocol": "q2l"},
                  measurement={"peak_vram_mib": 11500.0},
                  train={"selection": selection, "best_regular_mAP": mAP - 1, "best_ema_mAP": mAP,
                         "best_model": "ema", "best_epoch": 30, "epochs_run": 39, "stopped": stopped,
                         "gpu_hours": 20.5, "memory_techniques": ["activation checkpointing"],
                         "deviations": ["batch_size 32 (the authors' 64, README)"], "world_size": 1})


def test_training_rows_per_selection_and_not_in_the_release_table(tmp_path):
    for selection, mAP, smoke, stopped in (("test", 84.1, (), "early stop after epoch 38"),
                                           ("held-out", 83.0, (), None), ("test", 10.0, ("smoke subset",), None)):
        run_dir = new_run_dir(tmp_path, "q2l-r101-448")
        write_record(run_dir, _train_record(run_dir, selection, mAP, smoke, stopped))
    data = report.collect(tmp_path, load_manifest(), report.load_paper_tables(), measured_root=None)
    release = next(r for r in data["models"] if r["model"] == "q2l-r101-448")
    assert release["run_id"] is None  # a training is not an evaluation of the released checkpoint
    rows = {r["selection"]: r for r in data["q2l_trained"]}
    assert rows["test"]["selected_mAP"] == 84.1 and not rows["test"]["smoke"]  # the real run wins over smoke
    assert rows["held-out"]["selected_mAP"] == 83.0
    text = report.render(data, "markdown")
    assert "## Query2Label trained here" in text
    line = next(x for x in text.splitlines() if "84.10 (ema)" in x)
    assert "83.10 / 84.10" in line and "30 of 39" in line and "| yes " in line and "activation checkpointing" in line
    assert "selected on test (authors' protocol)" in line and "11500" in line
    assert "batch_size 32" in text
