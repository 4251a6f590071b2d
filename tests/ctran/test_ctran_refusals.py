"""`harness ctran train` refuses bad numbers, backbone files and state files in one line (exit 2), before
any run folder exists where it can; under torchrun a refusal reaches every rank and none is left waiting."""
import json
import pickle

import pytest
import torch
from forked_ranks import run_ranks
from stopped_runs import copy_run, edit_state
from torchvision.models.resnet import BasicBlock, ResNet

from harness.cli import main

# four images, one step of four: what is refused, and what resumes, does not depend on the run's size
TINY = ["--tiny", "--scale", "80", "--crop", "64", "--batch-size", "4", "--workers", "0", "--no-progress",
        "--limit", "4", "--epochs", "1"]
RESULTS = ("record.json", "scores.npy", "labels.npy", "image_ids.npy", "masks.npy")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _train(root, runs, *extra, backbone="random"):
    return main(["ctran", "train", "--coco-root", str(root), "--runs", str(runs), *TINY, "--backbone", backbone,
                 *extra])


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("extra, words", [
    (["--lr", "nan"], "--lr must be a positive finite number (got nan)"),
    (["--lr", "inf"], "--lr must be a positive finite number (got inf)"),
    (["--lr=-1e-5"], "--lr must be a positive finite number"),
    (["--crop", "200"], "--crop 200 is larger than --scale 80: the crop would be zero-padded"),
    (["--scale", "0", "--crop", "0"], "--scale must be at least 1"),
    (["--seed=-1"], "--seed must be a whole number from 0 to 2**32 - 1"),
])
def test_a_bad_number_is_one_line_before_any_folder(smoke_root, tmp_path, capsys, extra, words):
    assert _train(smoke_root, tmp_path / "runs", *extra) == 2
    assert words in _one_line(capsys)
    assert not (tmp_path / "runs").exists()


def _text(path):
    path.write_text("not weights\n")


def _code(path):
    path.write_bytes(pickle.dumps({"state_dict": RunsCode(path.parent / "RAN")}))


def _torch_code(path):
    torch.save({"state_dict": RunsCode(path.parent / "RAN")}, path)


def _another_model(path):
    torch.save({"fc.weight": torch.zeros(3, 4)}, path)


@pytest.mark.parametrize("make", [_text, _code, _torch_code, _another_model])
def test_a_bad_backbone_file_is_one_line_before_any_folder(smoke_root, tmp_path, capsys, make):
    make(tmp_path / "backbone.pth")
    assert _train(smoke_root, tmp_path / "runs", backbone=str(tmp_path / "backbone.pth")) == 2
    err = _one_line(capsys)
    assert f"--backbone {tmp_path / 'backbone.pth'}: " in err and "state dict file of torchvision's ResNet-101" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "RAN").exists()


def test_a_missing_backbone_file_is_one_line(smoke_root, tmp_path, capsys):
    assert _train(smoke_root, tmp_path / "runs", backbone=str(tmp_path / "nothing.pth")) == 2
    assert "names no file" in _one_line(capsys)


@pytest.fixture(scope="module")
def fitting_backbone(tmp_path_factory):
    path = tmp_path_factory.mktemp("ctran_backbone") / "tiny.pth"
    torch.save(ResNet(BasicBlock, [1, 1, 1, 1]).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def stopped(smoke_root, tmp_path_factory, fitting_backbone):
    """A finished one-epoch run from a backbone file that fits, its results removed: what a run stopped
    before its test pass leaves. Its resumes name the same file (a setting of the run)."""
    runs = tmp_path_factory.mktemp("ctran_stopped")
    assert _train(smoke_root, runs, backbone=fitting_backbone) == 0
    (run_dir,) = (runs / "ctran-r101-576").iterdir()
    for name in RESULTS:
        (run_dir / name).unlink()
    return run_dir


def test_a_backbone_file_that_fits_still_trains(stopped, fitting_backbone):
    # the training is the stopped run's (its exit status is asserted there): it trained from the file
    state = json.loads(torch.load(stopped / "state.pt", weights_only=True)["state_json"])
    assert state["epoch"] == 1 and state["backbone"]["source"] == fitting_backbone


@pytest.mark.parametrize("damage, words", [
    (lambda d: (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:300]), "is not a readable training state"),
    (lambda d: torch.save({"optimizer": RunsCode(d / "RAN")}, d / "state.pt"), "only code could rebuild"),
    (lambda d: edit_state(d, lambda s: s.update(state_json='{"epoch": "one"}')), "does not fit this run"),
    (lambda d: edit_state(d, lambda s: s["optimizer"].update(param_groups=[])), "does not fit this run"),
    (lambda d: edit_state(d, lambda s: s.pop("scheduler")), "no 'scheduler'"),
    (lambda d: (d / "last.safetensors").write_bytes(b"\0" * 64), "last.safetensors is missing, unreadable"),
])
def test_a_damaged_state_is_one_line_naming_it(stopped, fitting_backbone, smoke_root, tmp_path, capsys, damage, words):
    run_dir = copy_run(stopped, tmp_path)
    damage(run_dir)
    capsys.readouterr()
    assert _train(smoke_root, tmp_path / "runs", "--resume", str(run_dir), backbone=fitting_backbone) == 2
    err = _one_line(capsys)
    assert words in err and f"delete {run_dir} to start over" in err, err
    assert not (run_dir / "RAN").exists()


def test_weights_and_state_of_different_epochs_are_refused(stopped, fitting_backbone, smoke_root, tmp_path, capsys):
    run_dir = copy_run(stopped, tmp_path)
    edit_state(run_dir, lambda s: s.update(state_json=s["state_json"].replace('"epoch": 1', '"epoch": 0')))
    capsys.readouterr()
    assert _train(smoke_root, tmp_path / "runs", "--resume", str(run_dir), backbone=fitting_backbone) == 2
    assert "last.safetensors holds epoch 1" in _one_line(capsys)


def test_an_undamaged_stopped_run_resumes(stopped, fitting_backbone, smoke_root, tmp_path):
    run_dir = copy_run(stopped, tmp_path)
    assert _train(smoke_root, tmp_path / "runs", "--resume", str(run_dir), backbone=fitting_backbone) == 0
    assert (run_dir / "record.json").is_file()


@pytest.fixture
def loaded_before_forking():
    """What a finished training's rank 0 loads (TensorBoard's writer, the parsed manifest), loaded in this
    process: the forked ranks inherit it instead of loading it again (~0.4 s) where no test here did yet."""
    import torch.utils.tensorboard  # noqa: F401

    from harness.manifest import load_manifest

    load_manifest()


def test_a_resume_on_another_number_of_processes_is_refused_on_every_rank(smoke_root, tmp_path, capfd,
                                                                          loaded_before_forking):
    argv = ["ctran", "train", "--coco-root", str(smoke_root), "--runs", str(tmp_path / "runs"), *TINY,
            "--backbone", "random", "--device", "cpu", "--batch-size", "6"]  # splits over 2 and 3
    # six images: one step of three per rank (eight took two); the refusal needs a finished 2-rank run
    assert run_ranks([*argv, "--limit", "6"], world=2) == [0, 0]
    (run_dir,) = (tmp_path / "runs" / "ctran-r101-576").iterdir()
    for name in RESULTS:
        (run_dir / name).unlink()
    capfd.readouterr()
    assert run_ranks([*argv, "--limit", "6", "--resume", str(run_dir)], world=3) == [2, 2, 2]  # none left
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]  # waiting, none crashed
    assert len(err) == 1 and f"cannot resume {run_dir} on 3 process(es): it was trained on 2" in err[0], err


def test_a_damaged_state_under_torchrun_is_one_line_for_every_rank(smoke_root, tmp_path, capfd, stopped,
                                                                   fitting_backbone):
    run_dir = copy_run(stopped, tmp_path)
    argv = ["ctran", "train", "--coco-root", str(smoke_root), "--runs", str(tmp_path / "runs"), *TINY,
            "--backbone", fitting_backbone, "--device", "cpu", "--resume", str(run_dir)]
    (run_dir / "state.pt").write_bytes(b"garbage")
    settings = (run_dir / "settings.json").read_text()
    (run_dir / "settings.json").write_text(settings.replace('"processes": 1', '"processes": 2'))
    capfd.readouterr()
    assert run_ranks(argv, world=2) == [2, 2]
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "state.pt is not a readable training state" in err[0], err


def test_a_check_every_rank_fails_is_one_line(smoke_root, tmp_path, capfd):
    argv = ["ctran", "train", "--coco-root", str(smoke_root), "--runs", str(tmp_path / "runs"), *TINY,
            "--backbone", "random", "--device", "cpu"]  # batch 4 over 3 processes
    assert run_ranks(argv, world=3) == [2, 2, 2]
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--batch-size 4 does not split evenly over 3 processes" in err[0], err
