"""harness reproduce q2l: goes on past a failing model, lists failures, skips complete runs, writes tables."""
import json

from authors_checkpoints import SMALL, randomised, save_authors_checkpoint, small_q2l_manifest

import harness.data.loader
from harness import records
from harness.cli import main


def test_reproduce_goes_on_after_a_failure_and_writes_the_report(smoke_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    # reproduce has no --workers: its loader's default (every core) made 0, images loaded in this process
    # (what is checked is going on past a failure and the report, not the loader's worker processes)
    monkeypatch.setattr(harness.data.loader, "usable_cores", lambda: 0)
    manifest = small_q2l_manifest(tmp_path)
    weights = tmp_path / "weights" / "small-q2l-tresl22k-448"
    weights.mkdir(parents=True)
    save_authors_checkpoint(randomised(SMALL, 3), weights / "checkpoint.pkl")
    (weights / "config_new.json").write_text(json.dumps({"img_size": 64, "orid_norm": "True"}))
    args = ["reproduce", "q2l", "--coco-root", str(smoke_root), "--manifest", str(manifest), "--weights-dir",
            str(tmp_path / "weights"), "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "tables")]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 1  # one model failed
    assert "small-q2l-r101-448 failed: offline" in out
    assert "No CUDA GPU visible" in out and "about" in out
    assert len(list((tmp_path / "runs" / "small-q2l-tresl22k-448").glob("*/record.json"))) == 1
    report = (tmp_path / "tables" / "report.md").read_text()
    assert "small-q2l-tresl22k-448" in report and "smoke" in report
    for ext in ("csv", "tex", "json", "html"):
        assert (tmp_path / "tables" / f"report.{ext}").is_file()


def test_reproduce_skips_a_complete_real_run_and_explains_missing_coco(smoke_root, tmp_path, capsys):
    manifest = small_q2l_manifest(tmp_path)
    run_dir = records.new_run_dir(tmp_path / "runs", "small-q2l-tresl22k-448")
    # a finished real run, as far as the skip decision reads it
    records.write_record(run_dir, records.Record(
        kind="eval", model={"id": "small-q2l-tresl22k-448"}, run_id=run_dir.name, dataset={"n_images": 1},
        metrics={"mAP": 1.0}, files=dict(records.SCORE_FILES), digests=dict.fromkeys(records.SCORE_FILES, "0" * 64),
        eval={"batch_size": 4, "amp": False}))
    args = ["reproduce", "q2l", "--coco-root", str(smoke_root), "--manifest", str(manifest),
            "--models", "small-q2l-tresl22k-448", "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "t")]
    assert main(args) == 0
    assert "complete run exists" in capsys.readouterr().out
    assert main(["reproduce", "q2l", "--coco-root", str(tmp_path / "nococo"), "--manifest", str(manifest)]) == 2
    assert "harness data coco --root" in capsys.readouterr().err


def test_a_run_with_forced_amp_does_not_stand_in_for_the_paper_setting(tmp_path):
    from harness import records
    from harness.records import complete_run

    def write(name, amp, source):
        folder = tmp_path / "q2l-r101-448" / name
        folder.mkdir(parents=True)
        records.write_record(folder, records.Record(
            kind="eval", model={"id": "q2l-r101-448"}, run_id=name, dataset={"n_images": 1}, metrics={"mAP": 1.0},
            files=dict(records.SCORE_FILES), digests=dict.fromkeys(records.SCORE_FILES, "0" * 64),
            eval={"batch_size": 16, "amp": amp, "amp_source": source}))
        return folder

    write("a-forced", "bf16", "--amp")
    assert complete_run(tmp_path, "q2l-r101-448") is None  # make reproduce-q2l still runs the paper's setting
    assert complete_run(tmp_path, "q2l-r101-448", amp="bf16") == tmp_path / "q2l-r101-448" / "a-forced"
    paper = write("b-paper", "fp16", "config_new.json amp=true (the authors' inference ran under fp16 autocast)")
    assert complete_run(tmp_path, "q2l-r101-448") == paper
