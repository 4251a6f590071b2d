"""`harness mlspl train` refuses, in one line and exit 2, what would end it in a traceback or a number
that means nothing: a damaged state file, features holding a NaN, a loss that turns NaN."""
import pickle
import shutil

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.mlspl import train as mlspl_train
from harness.mlspl.features import FEATURE_FILES


class RunsCode:
    """A pickle that runs a command when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _train(base, feats, runs, *extra):
    return main(["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", str(base / "data"), "--features",
                 str(feats), "--lr", "1e-3", "--batch-size", "16", "--epochs", "1", "--device", "cpu", "--no-progress",
                 "--runs", str(runs), *extra])


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _truncate(path):
    path.write_bytes(path.read_bytes()[:300])


def _code_pickle(path):
    path.write_bytes(pickle.dumps({"config": RunsCode(path.parent / "RAN")}))


def _wrong_shape(path):
    state = torch.load(path, weights_only=True)
    state["params"][0] = torch.zeros(3)  # copy_ would broadcast it silently
    torch.save(state, path)


def _not_a_dict(path):
    torch.save([1, 2, 3], path)


def _keys_missing(path):
    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)


@pytest.fixture(scope="module")
def trained_runs(synth, tmp_path_factory):
    """A runs folder holding one finished one-epoch run and its state file: the damage tests copy it
    (none writes it) instead of each training the same epoch."""
    base, feats = synth
    runs = tmp_path_factory.mktemp("mlspl_refusals") / "runs"
    assert _train(base, feats, runs) == 0
    return runs


@pytest.mark.parametrize("damage", [_truncate, _code_pickle, _wrong_shape, _not_a_dict, _keys_missing])
def test_a_damaged_linear_state_file_is_one_line_naming_it(synth, trained_runs, tmp_path, capsys, damage):
    base, feats = synth
    shutil.copytree(trained_runs, tmp_path / "runs")
    (state,) = (tmp_path / "runs" / "_mlspl_work").glob("*/linear_bs16.pt")
    damage(state)
    capsys.readouterr()
    assert _train(base, feats, tmp_path / "runs") == 2
    err = _one_line(capsys)
    assert str(state) in err and "delete it" in err, err
    assert not (state.parent / "RAN").exists()  # never unpickled with code


def test_features_holding_a_nan_are_refused_naming_the_file_and_row(synth, tmp_path, capsys):
    base, feats = synth
    bad = tmp_path / "feats"
    bad.mkdir()
    for name in FEATURE_FILES.values():
        array = np.load(feats / name)
        if name == FEATURE_FILES["train"]:
            array[[7, 9], 3] = [np.nan, np.inf]
        np.save(bad / name, array)
    capsys.readouterr()
    assert _train(base, bad, tmp_path / "runs") == 2
    err = _one_line(capsys)
    assert f"{bad / FEATURE_FILES['train']}: row 7 holds a non-finite value" in err, err
    assert not (tmp_path / "runs" / "mlspl-an-linear").exists()  # no record, no test mAP


@pytest.mark.parametrize("damage", ["pickle", "text", "cut"])
def test_features_that_are_not_an_array_are_one_line_and_never_unpickled(synth, tmp_path, capsys, damage):
    """np.load read the feature files as they came: a text file was a traceback, a truncated one too."""
    base, feats = synth
    bad = tmp_path / "feats"
    bad.mkdir()
    for name in FEATURE_FILES.values():
        np.save(bad / name, np.load(feats / name))
    target = bad / FEATURE_FILES["train"]
    if damage == "pickle":
        np.save(target, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif damage == "text":
        target.write_text("not features")
    else:
        target.write_bytes(target.read_bytes()[:-100])
    capsys.readouterr()
    assert _train(base, bad, tmp_path / "runs") == 2
    assert str(target) in _one_line(capsys)


def test_a_loss_that_turns_nan_stops_instead_of_selecting_an_epoch(synth, tmp_path, capsys, monkeypatch):
    base, feats = synth
    real, calls = mlspl_train.compute_loss, []

    def nan_from_the_second_epoch(*a, **k):
        calls.append(1)
        loss = real(*a, **k)
        return loss * float("nan") if len(calls) > 700 // 16 else loss

    monkeypatch.setattr(mlspl_train, "compute_loss", nan_from_the_second_epoch)
    capsys.readouterr()
    assert _train(base, feats, tmp_path / "runs", "--epochs", "3") == 2
    err = _one_line(capsys)
    assert "loss became non-finite in epoch 2 (batch size 16, lr 0.001)" in err, err
    assert not (tmp_path / "runs" / "mlspl-an-linear").exists()


def test_a_fine_tuning_resumed_on_another_number_of_processes_is_refused(tmp_path):
    from harness.errors import UserError
    from harness.mlspl.config import TrainConfig
    from harness.mlspl.run import _work_dir

    config = TrainConfig("AN", "fine-tuned", data_dir=tmp_path, coco_root=tmp_path, points=((8, 1e-3),), epochs=2,
                         device="cpu", runs_root=tmp_path / "runs")
    work = _work_dir(config, "mlspl-an-fine-tuned", "data-sha", processes=2)
    assert _work_dir(config, "mlspl-an-fine-tuned", "data-sha", processes=2) == work
    with pytest.raises(UserError, match=r"cannot resume .* on 3 process\(es\): it was trained on 2; start it with "
                                        r"torchrun --nproc_per_node 2"):
        _work_dir(config, "mlspl-an-fine-tuned", "data-sha", processes=3)
