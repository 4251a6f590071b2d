"""C-Tran end to end on the smoke subset (tiny backbone, CPU): train, resume, eval at four settings, report."""
import json
import shutil

import numpy as np
import pytest
import torch
from stopped_runs import copy_run

from harness.cli import main
from harness.ctran import run as ctran_run

# four images a split, one step of four an epoch: training, resuming and recording do not depend on the size
# (the eval below takes eight)
TINY = ["--tiny", "--scale", "80", "--crop", "64", "--batch-size", "4", "--backbone", "random", "--workers", "0",
        "--no-progress", "--limit", "4"]


def _train(root, out, *extra):
    return main(["ctran", "train", "--coco-root", str(root), "--out", str(out), *TINY, *extra])


def _weights(path):
    from safetensors.torch import load_file
    return load_file(str(path))


@pytest.fixture(scope="module")
def trained(smoke_root, tmp_path_factory):
    """A two-epoch run (out, its folder) and a copy of its folder as it stood when epoch 2 began: what a
    Ctrl-C there leaves, so the resume test need not train epoch 1 again (tests copy it, never write it)."""
    out, early = tmp_path_factory.mktemp("ctran_runs"), tmp_path_factory.mktemp("ctran_epoch_1")
    real, calls = ctran_run.train_epoch, []

    def copy_as_epoch_2_begins(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            (run_dir,) = (out / "ctran-r101-576").iterdir()
            shutil.copytree(run_dir, early / "ctran-r101-576" / run_dir.name)
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ctran_run, "train_epoch", copy_as_epoch_2_begins)
        assert _train(smoke_root, out, "--epochs", "2") == 0
    (run_dir,) = (out / "ctran-r101-576").iterdir()
    return out, run_dir, early / "ctran-r101-576" / run_dir.name


def test_training_record_is_flagged_and_selected_on_test(trained):
    out, run_dir, _ = trained
    record = json.loads((run_dir / "record.json").read_text())
    assert record["kind"] == "train" and record["smoke"]
    assert "smoke subset" in record["smoke_reasons"] and "random backbone weights" in record["smoke_reasons"]
    assert record["ctran"]["selection"] == "test" and record["eval"]["protocol"] == "ctran"
    assert [h["epoch"] for h in record["train"]["history"]] == [1, 2]
    assert record["train"]["best_epoch"] in (1, 2)
    assert np.load(run_dir / "masks.npy").min() == -1  # known 0: every label unknown


def test_interrupted_training_resumes_to_the_same_weights(trained, smoke_root, tmp_path, monkeypatch):
    _, full, at_epoch_2 = trained
    resumed = copy_run(at_epoch_2, tmp_path)  # the same run's epoch 1, as a run stopped in epoch 2 keeps it
    real = ctran_run.train_epoch

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ctran_run, "train_epoch", stop)
    assert _train(smoke_root, tmp_path / "runs", "--epochs", "2", "--resume") == 130  # Ctrl-C in epoch 2
    monkeypatch.setattr(ctran_run, "train_epoch", real)
    assert _train(smoke_root, tmp_path / "runs", "--epochs", "2", "--resume") == 0
    a, b = _weights(full / "last.safetensors"), _weights(resumed / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_at_four_settings_then_report(trained, smoke_root, tmp_path, capsys):
    out, run_dir, _ = trained
    # --workers 1: the one test of C-Tran's loader in a worker process (the training tests load in-process)
    assert main(["eval", "ctran-r101-576", "--coco-root", str(smoke_root), "--weights", str(run_dir / "best.safetensors"),
                 "--known", "0", "25", "50", "75", "--out", str(out), "--no-progress", "--limit", "8",
                 "--workers", "1"]) == 0
    for mid, known in (("ctran-r101-576-known25", 20), ("ctran-r101-576-known75", 60)):
        (d,) = (out / mid).iterdir()
        record = json.loads((d / "record.json").read_text())
        assert record["smoke"] and record["eval"]["known_labels"] == known
        assert ((np.load(d / "masks.npy") != -1).sum(1) == known).all()
        assert "random backbone weights" in record["smoke_reasons"]  # carried by the checkpoint
    capsys.readouterr()
    assert main(["verify", str(d), str(run_dir), "--no-progress", "--format", "json"]) == 3  # masks included
    for verified in json.loads(capsys.readouterr().out)["runs"]:  # nothing fails; --limit 8 leaves the labels
        unchecked = [f["check"] for f in verified["findings"] if f["outcome"] != "held"]  # against the whole split's
        assert verified["verdict"] == "unverified" and unchecked == ["labels"], verified  # fingerprint unchecked
    assert main(["report", "--runs", str(out), "--format", "markdown", "--out", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "C-Tran, partial labels known at inference" in text and "(smoke)" in text
    assert "selected on test" in text


def test_bad_inputs_are_one_line(trained, smoke_root, tmp_path, capsys):
    out, run_dir, _ = trained
    best = str(run_dir / "best.safetensors")
    base = ["eval", "ctran-r101-576", "--coco-root", str(smoke_root), "--out", str(tmp_path), "--no-progress"]
    cases = [(base + ["--weights", best, "--known", "33"], "--known must be 0, 25, 50 or 75"),
             (["eval", "ctran-r101-576-no-lmt", *base[2:], "--weights", best], "with label-mask training, but"),
             (base + ["--weights", str(tmp_path / "other.safetensors")], "not a C-Tran checkpoint"),
             (base + ["--weights", str(tmp_path / "other.pt")], "not a checkpoint of this C-Tran model")]
    from safetensors.torch import save_file
    save_file({"fc.weight": torch.zeros(80, 2048)}, str(tmp_path / "other.safetensors"), metadata={"format": "x"})
    torch.save({"state_dict": {"fc.weight": torch.zeros(80, 2048)}}, tmp_path / "other.pt")
    for argv, words in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err


def test_held_out_split_is_disjoint_and_seeded():
    train, val = ctran_run.split_rows(100, 0.1, 0)
    assert len(val) == 10 and not set(train) & set(val) and sorted(set(train) | set(val)) == list(range(100))
    assert (ctran_run.split_rows(100, 0.1, 0)[1] == val).all() and not (ctran_run.split_rows(100, 0.1, 1)[1] == val).all()


def test_rescore_uses_the_runs_mask(trained, smoke_root, tmp_path, capsys):
    out, trained_dir, _ = trained
    if not (out / "ctran-r101-576-known50").exists():  # the four-settings test writes it in its process; if
        out = tmp_path  # it ran in another (pytest's other worker) or not at all, an eval at 50% known here
        assert main(["eval", "ctran-r101-576", "--coco-root", str(smoke_root), "--known", "50", "--limit", "8",
                     "--weights", str(trained_dir / "best.safetensors"), "--out", str(out), "--no-progress",
                     "--workers", "0"]) == 0
    run_dir = sorted((out / "ctran-r101-576-known50").iterdir())[-1]
    recorded = json.loads((run_dir / "record.json").read_text())["metrics"]
    capsys.readouterr()
    assert main(["rescore", str(run_dir), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == recorded["mAP"]


def test_predict_refuses_ctran_in_one_line(smoke_root, capsys):
    image = next((smoke_root / "val2014").iterdir())
    assert main(["predict", "ctran-r101-576", str(image), "--weights", "random"]) == 2
    assert "harness eval ctran-r101-576" in capsys.readouterr().err
