"""torchrun with 2 CPU processes (gloo): the same scores as one process, bit for bit; a failing
rank fails the run with one line; the run resumes per rank."""
import json
import os
import signal
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import tiny_convnet
import torch
from forked_ranks import run_ranks
from tiny_models import write_manifest
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous import dynamic_rendezvous
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from harness.cli import main
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate
from harness.manifest import get_spec

# torchrun's own launcher (elastic_launch, what `torchrun --standalone` calls: its agent, rendezvous,
# worker environment and failure handling) with the CLI as the entry point, run in this process: its
# workers are forked from it, not started as `python -m harness`, and the launcher is not a fresh
# interpreter either, which saves three interpreters' torch import; .ci/check_installed.sh launches
# the installed command itself.
TORCHRUN = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, rdzv_backend="c10d", rdzv_endpoint="localhost:0",
                        max_restarts=0, start_method="fork")
# the launcher's handlers (each raises in the process it runs in), put back after each launch
LAUNCHER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGALRM)
TIMEOUT_S = 300  # a hung launch fails the test (the agent's shutdown ends its workers)


def _method_name(depth=2):
    """dynamic_rendezvous.get_method_name (the caller's caller's name, for the launcher's event log) without
    inspect.stack(), which reads the source lines of every frame of pytest's deep stack: ~0.03 s a call,
    twice for each of the launch's rendezvous events."""
    return sys._getframe(depth).f_code.co_name


def _rank_main(argv):
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 for a started worker
    return main(argv)


FLAGS = ["--weights", "random", "--device", "cpu", "--workers", "0", "--no-progress"]


def nan_on_rank_1_after(calls_before):
    forward, calls = tiny_convnet.TinyConvNet.forward, []

    def failing(self, x):
        calls.append(self.conv.out_channels == 4)  # sd-a's forward calls only
        out = forward(self, x)
        return out * float("nan") if os.environ["RANK"] == "1" and sum(calls) > calls_before else out

    return failing


@pytest.fixture()
def manifest(tmp_path):
    return write_manifest(tmp_path)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, smoke_root):
    """mid -> the model's run folder from one process (scored once per module, read only): what every
    launch must equal (the tests' manifests are this one's copies)."""
    folder = tmp_path_factory.mktemp("one_process")
    manifest, runs = write_manifest(folder), {}

    def run(mid):
        if mid not in runs:
            runs[mid] = evaluate(get_spec(mid, manifest), EvalConfig(coco_root=smoke_root, weights="random",
                                                                     runs_root=folder / "runs", workers=0,
                                                                     progress=False)).run_dir
        return runs[mid]

    return run


def _eval_argv(tmp_path, manifest, smoke_root, *args):
    return ["eval", *args, "--coco-root", str(smoke_root), "--manifest", str(manifest), *FLAGS,
            "--runs", str(tmp_path / "runs")]


def _timed_out(signum, frame):
    raise TimeoutError(f"torchrun ran past {TIMEOUT_S} s")


def _torchrun(tmp_path, manifest, smoke_root, *args):
    """(returncode, stderr) of the launch as torchrun ends: the largest rank exit code, or 1 and the
    launcher's account of the failed ranks."""
    handlers = {s: signal.getsignal(s) for s in LAUNCHER_SIGNALS}
    signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(TIMEOUT_S)
    try:
        codes = elastic_launch(TORCHRUN, _rank_main)(_eval_argv(tmp_path, manifest, smoke_root, *args))
        return SimpleNamespace(returncode=max(codes.values()), stderr="")
    except ChildFailedError as failed:
        return SimpleNamespace(returncode=1, stderr=str(failed))
    finally:
        signal.alarm(0)
        for s, handler in handlers.items():
            signal.signal(s, handler)


def _forked_ranks(tmp_path, manifest, smoke_root, *args, world=2):
    """The same CLI on `world` ranks forked from this process (forked_ranks.py): each rank's exit code
    (99: the command left its process group joined)."""
    return run_ranks(_eval_argv(tmp_path, manifest, smoke_root, *args), world=world)


def _assert_as_one_process(tmp_path, one_process, mid, rows):
    [run_dir] = (tmp_path / "runs" / mid).iterdir()
    alone = one_process(mid)
    assert np.array_equal(np.load(run_dir / "scores.npy"), np.load(alone / "scores.npy")), mid
    record = json.loads((run_dir / "record.json").read_text())
    assert record["metrics"] == json.loads((alone / "record.json").read_text())["metrics"]
    world = record["distributed"]
    assert world["world_size"] == 2 and [r["rank"] for r in world["ranks"]] == [0, 1]
    assert [r["rows"] for r in world["ranks"]] == rows
    assert not list(run_dir.glob("*.partial.npy")) and not list(run_dir.glob("progress*"))


def test_torchrun_scores_as_one_process(manifest, smoke_root, tmp_path, one_process, monkeypatch):
    monkeypatch.setattr(dynamic_rendezvous, "get_method_name", _method_name)
    launched = _torchrun(tmp_path, manifest, smoke_root, "sd-c")
    assert launched.returncode == 0, launched.stderr
    _assert_as_one_process(tmp_path, one_process, "sd-c", [[0, 12], [12, 22]])


def test_two_ranks_score_as_one_process(manifest, smoke_root, tmp_path, one_process):
    assert _forked_ranks(tmp_path, manifest, smoke_root, "sd-c", "sd-a") == [0, 0]
    _assert_as_one_process(tmp_path, one_process, "sd-a", [[0, 12], [12, 24]])
    _assert_as_one_process(tmp_path, one_process, "sd-c", [[0, 12], [12, 22]])


def test_a_failing_rank_fails_the_run_with_one_line_and_it_resumes_per_rank(manifest, smoke_root, tmp_path,
                                                                           one_process, monkeypatch, capfd):
    with monkeypatch.context() as patched:
        patched.setattr(tiny_convnet.TinyConvNet, "forward", nan_on_rank_1_after(2))
        assert _forked_ranks(tmp_path, manifest, smoke_root, "sd-c", "sd-a") == [2, 2]  # each rank says it failed
    lines = [line for line in capfd.readouterr().err.splitlines() if ": FAILED: " in line]
    assert len(lines) == 1 and "sd-a: FAILED: rank 1 of 2 failed: sd-a returned NaN" in lines[0], lines
    [sd_a] = (tmp_path / "runs" / "sd-a").iterdir()
    assert not (sd_a / "record.json").exists()
    assert json.loads((sd_a / "progress.rank0-of-2.json").read_text())["done"] == 12  # rank 0 finished its half
    assert _forked_ranks(tmp_path, manifest, smoke_root, "sd-a", "--resume") == [0, 0]
    _assert_as_one_process(tmp_path, one_process, "sd-a", [[0, 12], [12, 24]])
    _assert_as_one_process(tmp_path, one_process, "sd-c", [[0, 12], [12, 22]])
