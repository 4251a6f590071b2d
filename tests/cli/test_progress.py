"""What a user sees while a long step runs, on small runs: each step named with its duration (a fake
clock, so the durations said are the clock's), a bar with every image counted, --no-progress and
--quiet honoured, resume lines, and an interrupted run that prints the exact command continuing it."""
import functools
import itertools
import shlex

import numpy as np
import pytest
import torch
from conftest import tiny_manifest
from torch import nn

import harness.data.loader
import harness.mlspl.run
from harness import progress
from harness.cli import continue_command, main
from harness.eval.shared_pass import Scorer
from harness.measure.throughput import SyntheticInput, Timing, time_model
from harness.mlspl.config import TrainConfig
from harness.mlspl.prepare import load_prepared
from harness.mlspl.train import PointResult, train_fine_tuned, train_linear_group
from harness.models import register_model
from harness.models.mlspl import FEATURE_DIM, MLSPLResNet50


@register_model
def tiny_progress_net(num_classes=80, **_):
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, num_classes))


@pytest.fixture()
def manifest(tmp_path):
    return tiny_manifest(tmp_path, "tiny-progress", {"name": "tiny_progress_net", "num_classes": 80}, resolution=32,
                         batch_size=4)


@pytest.fixture()
def fake_clock(monkeypatch):
    """Each reading of the progress clock is 2.5 s after the last; steps say what they do at once."""
    ticks = itertools.count(0.0, 2.5)
    monkeypatch.setattr(progress, "clock", lambda: next(ticks))
    monkeypatch.setattr(progress, "SAY_AFTER_S", 0)


def _eval(manifest, smoke_root, runs, *extra):
    return ["eval", "tiny-progress", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
            "random", "--runs", str(runs), "--workers", "0", *extra]


def test_eval_names_each_step_with_its_time_and_counts_every_image_on_its_bar(manifest, smoke_root, tmp_path,
                                                                              capsys, fake_clock):
    assert main(_eval(manifest, smoke_root, tmp_path / "runs")) == 0
    out, err = capsys.readouterr()
    assert "tiny-progress: building the model (random weights, seed 0) ...\n" in err
    assert "tiny-progress: building the model (random weights, seed 0): done in 2.5 s\n" in err  # the fake clock's
    assert "tiny-progress: 24 images to score in 6 batch(es) of 4 on cpu" in out
    assert "24/24" in err and "tiny-progress: 100%" in err  # the bar, on stderr: stdout keeps the result
    assert "scoring a batch of 4" in err  # said while a batch runs
    assert "tiny-progress: mAP" in out and "|" not in out


def test_no_progress_keeps_the_step_lines_and_quiet_keeps_only_the_result(manifest, smoke_root, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(progress, "SAY_AFTER_S", 0)
    assert main(_eval(manifest, smoke_root, tmp_path / "a", "--no-progress")) == 0
    out, err = capsys.readouterr()
    assert "building the model" in err and "24/24" not in err and "%|" not in err
    assert main(_eval(manifest, smoke_root, tmp_path / "b", "--quiet")) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("tiny-progress: mAP")


def test_an_interrupted_eval_prints_the_command_that_continues_it(manifest, smoke_root, tmp_path, capsys,
                                                                  monkeypatch):
    real, calls = Scorer._score, []

    def stop_at_the_third_batch(self, rows, images):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(rows)
        real(self, rows, images)

    monkeypatch.setattr(Scorer, "_score", stop_at_the_third_batch)
    argv = _eval(manifest, smoke_root, tmp_path / "runs", "--no-progress")
    assert main(argv) == 130
    err = capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs" / "tiny-progress").iterdir()
    assert f"tiny-progress: 8 of 24 images scored, kept in {run_dir}\n" in err
    command = next(line for line in err.splitlines() if line.startswith("continue with: "))
    assert command == "continue with: " + shlex.join(["harness", *argv, "--resume", str(run_dir)])

    monkeypatch.setattr(Scorer, "_score", real)
    assert main(shlex.split(command.removeprefix("continue with: "))[1:]) == 0
    out = capsys.readouterr().out
    assert f"tiny-progress: resuming {run_dir}: 8 of 24 images were scored before it stopped" in out
    assert main(_eval(manifest, smoke_root, tmp_path / "whole", "--no-progress")) == 0
    (whole,) = (tmp_path / "whole" / "tiny-progress").iterdir()
    assert np.array_equal(np.load(run_dir / "scores.npy"), np.load(whole / "scores.npy"))


@pytest.mark.parametrize("argv, flags, drop, expected", [
    (["eval", "m", "--resume"], ("--resume", "R"), (), "harness eval m --resume R"),
    (["eval", "m", "--resume", "OLD", "--limit", "3"], ("--resume", "R"), (), "harness eval m --limit 3 --resume R"),
    (["eval", "--resume=OLD", "m"], ("--resume", "R"), (), "harness eval m --resume R"),
    (["eval", "a", "b", "c", "--coco-root", "x y"], ("--resume",), ("b",), "harness eval a c --coco-root 'x y' --resume"),
    (["mlspl", "train", "--loss", "AN"], (), (), "harness mlspl train --loss AN"),
])
def test_the_continuing_command_is_the_typed_one_with_the_resume_flags(argv, flags, drop, expected):
    assert continue_command(argv, flags, drop) == expected


def test_an_interrupted_mlspl_training_says_to_type_it_again_and_the_rerun_says_it_resumed(synth, tmp_path, capsys,
                                                                                        monkeypatch):
    base, feats = synth
    argv = ["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", str(base / "data"), "--features",
            str(feats), "--lr", "1e-2", "--batch-size", "16", "--epochs", "2", "--device", "cpu", "--runs",
            str(tmp_path / "runs")]
    real = harness.mlspl.run._say

    def stop_after_the_first_epoch(enabled, total):
        def say(epoch, val_maps):
            raise KeyboardInterrupt
        return say

    monkeypatch.setattr(harness.mlspl.run, "_say", stop_after_the_first_epoch)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "mlspl-an-linear: every finished epoch is kept in" in err
    assert f"continue with: {shlex.join(['harness', *argv])}\n" in err
    monkeypatch.setattr(harness.mlspl.run, "_say", real)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resuming from " in out and "epochs 1-1 of 2 were trained before it stopped" in out


def test_a_linear_group_says_when_everything_was_already_trained(synth, tmp_path, capsys):
    base, feats = synth
    data = load_prepared(base / "data")
    x = {k: torch.from_numpy(np.load(feats / f"{'val' if k == 'test' else 'train'}_features_imagenet_resnet50.npy")
                             [data[k].rows]) for k in data}
    train = (x["train"], torch.as_tensor(data["train"].labels_obs, dtype=torch.float32))
    config = TrainConfig("AN", epochs=1)
    args = (train, (x["val"], data["val"].labels), (x["test"], data["test"].labels), config, 16, [1e-2])
    train_linear_group(*args, state_path=tmp_path / "state.pt")
    capsys.readouterr()
    train_linear_group(*args, state_path=tmp_path / "state.pt")
    assert f"already trained: all 1 epochs are in {tmp_path / 'state.pt'}" in "".join(capsys.readouterr())


def test_fine_tuning_draws_a_bar_of_its_batches(smoke_root, smoke_data, capsys, monkeypatch):
    # tqdm skips a redraw that comes within its mininterval of the last (0.1 s), and a bar that does not
    # stay clears itself: on a fast machine "2/2" was never drawn. Every update is drawn here.
    monkeypatch.setattr(progress, "bar", functools.partial(progress.bar, mininterval=0))
    torch.manual_seed(0)
    config = TrainConfig("AN", "fine-tuned", coco_root=smoke_root, epochs=1, resolution=32, workers=0, seed=0,
                         max_steps=2)
    # a head handed over (as linear-init does): the same loop draws the bar, without replaying a random start's
    # ResNet-50 draws (25 M, about half this test's time; tests/mlspl train from that start)
    head = PointResult(4, 1e-3, head={"weight": torch.zeros(80, FEATURE_DIM), "bias": torch.zeros(80)})
    train_fine_tuned(MLSPLResNet50(layers=[1, 1, 1, 1]), load_prepared(smoke_data), config, (4, 1e-3), start=head)
    err = capsys.readouterr().err
    assert "epoch 1/1 train (bs 4, lr 0.001)" in err and "2/2" in err and "epoch 1/1 val" in err


def test_eta_lines_read_the_progress_clock(fake_clock):
    eta = progress.Eta(10)  # made at 0 s
    assert eta.line(0) == "0/10 done"
    assert eta.line(2) == "2/10 done, about 10 s left"  # read at 2.5 s: 1.25 s a unit, 8 to go
    assert progress.duration(4000) == "1 h 06 min" and progress.duration(75) == "1 min 15 s"


def test_bench_says_how_long_its_timed_calls_will_take(capsys):
    time_model(_Flat(), 2, "cpu", SyntheticInput(8), Timing(iters=3, warmup=1))
    said = "".join(capsys.readouterr())
    assert "batch 2: 1 warm-up call(s) in" in said and "now at least 3 timed calls, about" in said


class _Flat(nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1)


@pytest.mark.usefixtures("plots_not_drawn")
def test_an_interrupted_reproduce_is_continued_by_the_same_command(smoke_root, tmp_path, capsys, monkeypatch):
    from authors_checkpoints import SMALL, randomised, save_authors_checkpoint, small_q2l_manifest

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    # reproduce has no --workers: its loader's default (every core) made 0, images loaded in this process
    # (what is checked is the interruption and the resume, not the loader's worker processes)
    monkeypatch.setattr(harness.data.loader, "usable_cores", lambda: 0)
    weights = tmp_path / "weights" / "small-q2l-tresl22k-448"
    weights.mkdir(parents=True)
    save_authors_checkpoint(randomised(SMALL, 3), weights / "checkpoint.pkl")
    (weights / "config_new.json").write_text('{"img_size": 64, "orid_norm": "True", "batch_size": 8}')
    argv = ["reproduce", "q2l", "--coco-root", str(smoke_root), "--manifest", str(small_q2l_manifest(tmp_path)),
            "--models", "small-q2l-tresl22k-448", "--weights-dir", str(tmp_path / "weights"), "--runs",
            str(tmp_path / "runs"), "--report-dir", str(tmp_path / "tables"), "--no-progress"]
    real = Scorer._score

    def stop_at_the_second_batch(self, rows, images):
        if rows[0] > 0:
            raise KeyboardInterrupt
        real(self, rows, images)

    monkeypatch.setattr(Scorer, "_score", stop_at_the_second_batch)
    assert main(argv) == 130
    err = capsys.readouterr().err
    (run_dir,) = (tmp_path / "runs" / "small-q2l-tresl22k-448").iterdir()
    assert f"small-q2l-tresl22k-448: 8 of 24 images scored, kept in {run_dir}" in err
    assert f"continue with: {shlex.join(['harness', *argv])}\n" in err
    monkeypatch.setattr(Scorer, "_score", real)
    assert main(argv) == 0
    assert f"resuming {run_dir}: 8 of 24 images were scored" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "runs" / "small-q2l-tresl22k-448").iterdir()] == [run_dir.name]
    assert (run_dir / "record.json").is_file()


def test_a_quick_step_says_nothing_and_a_slow_one_says_what_it_does(monkeypatch, capsys):
    import threading

    monkeypatch.setattr(progress, "SAY_AFTER_S", 0.05)
    said = ""
    with progress.step("quick"):
        pass
    done = threading.Event()
    with progress.step("slow"):
        for _ in range(500):  # past SAY_AFTER_S the line comes while it runs: waited for, 5 s at most
            said += "".join(capsys.readouterr())
            if "slow ..." in said:
                break
            done.wait(0.01)
    said += "".join(capsys.readouterr())
    assert "quick" not in said and "slow ..." in said
