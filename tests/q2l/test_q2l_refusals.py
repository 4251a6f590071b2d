"""`harness q2l train` refuses, in one line and exit 2, a damaged state file, flags it cannot honour and a
resume on another number of processes (on every rank under torchrun, none left waiting). The refusals are
the same for every backbone: the small one's runs are made and copied here (q2l_train_helpers.SMALL)."""
import pickle

import pytest
import torch
from forked_ranks import run_ranks
from q2l_train_helpers import SMALL, tiny_coco
from stopped_runs import copy_run, edit_state

from harness.cli import main

RESULTS = ("record.json", "scores.npy", "labels.npy", "image_ids.npy")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """8 train and 4 val images: one step an epoch (a batch of 8, or of 6 over 2 processes); the refusals
    do not depend on how much the runs trained."""
    return tiny_coco(tmp_path_factory.mktemp("q2l-coco"), n_val=4, n_train=8)


def _args(coco, runs, *extra):
    return ["q2l", "train", SMALL, "--coco-root", str(coco), "--smoke", "--epochs", "1", "--runs", str(runs),
            "--no-progress", *extra]


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def stopped(coco, tmp_path_factory):
    """A finished one-epoch run with its results removed: what a run stopped before its record leaves."""
    runs = tmp_path_factory.mktemp("q2l-stopped")
    assert main(_args(coco, runs)) == 0
    (run_dir,) = (runs / SMALL).iterdir()
    for name in RESULTS:
        (run_dir / name).unlink()
    return run_dir


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:500]), "is not a readable training state"),
    (lambda d: (d / "state.pt").write_bytes(pickle.dumps({"model": RunsCode(d / "RAN")})), "is not a readable"),
    (lambda d: torch.save({"model": RunsCode(d / "RAN")}, d / "state.pt"), "only code could rebuild"),
    (lambda d: edit_state(d, lambda s: s.update(rng=[])), "does not fit this run (IndexError"),
    (lambda d: edit_state(d, lambda s: s.update(model={"x": torch.zeros(1)})), "does not fit this run"),
    (lambda d: edit_state(d, lambda s: s.update(progress="[]")), "its progress has no 'epoch'"),
    (lambda d: edit_state(d, lambda s: s.pop("ema")), "no 'ema'"),
])
def test_a_damaged_state_is_one_line_naming_it(stopped, coco, tmp_path, capsys, damage, words):
    run_dir = copy_run(stopped, tmp_path)
    damage(run_dir)
    capsys.readouterr()
    assert main(_args(coco, tmp_path / "runs", "--resume", str(run_dir))) == 2
    err = _one_line(capsys)
    assert str(run_dir / "state.pt") in err and words in err and f"delete {run_dir} to start over" in err, err
    assert not (run_dir / "RAN").exists()


def test_damaged_selection_scores_are_one_line(stopped, coco, tmp_path, capsys):
    run_dir = copy_run(stopped, tmp_path)
    (run_dir / "selection_scores.npy").write_bytes(b"\x93NUMPY")
    capsys.readouterr()
    assert main(_args(coco, tmp_path / "runs", "--resume", str(run_dir))) == 2
    assert "the best epoch's scores cannot be read" in _one_line(capsys)


def test_an_undamaged_stopped_run_resumes(stopped, coco, tmp_path):
    run_dir = copy_run(stopped, tmp_path)
    assert main(_args(coco, tmp_path / "runs", "--resume", str(run_dir))) == 0
    assert (run_dir / "record.json").is_file()


@pytest.mark.parametrize("extra, words", [
    (["--seed", str(2**40)], "--seed must be a whole number from 0 to 2**32 - 1"),
    (["--backbone-weights", "some.pth"], "--smoke trains a tiny backbone from random weights"),
])
def test_a_flag_it_cannot_honour_is_one_line_before_any_folder(coco, tmp_path, capsys, extra, words):
    assert main(_args(coco, tmp_path / "runs", *extra)) == 2
    assert words in _one_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_a_resume_on_another_number_of_processes_is_refused_on_every_rank(coco, tmp_path, capfd):
    argv = _args(coco, tmp_path / "runs", "--batch-size", "6")  # splits over 2 and 3
    assert run_ranks(argv, world=2) == [0, 0]
    (run_dir,) = (tmp_path / "runs" / SMALL).iterdir()
    for name in RESULTS:
        (run_dir / name).unlink()
    capfd.readouterr()
    assert run_ranks([*argv, "--resume", str(run_dir)], world=3) == [2, 2, 2]  # none left waiting, none crashed
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and f"cannot resume {run_dir} on 3 process(es): it was trained on 2" in err[0], err
