"""torchrun with 2 CPU processes (gloo): the same scores as one process, bit for bit; a failing
rank fails the run with one line; the run resumes per rank."""
import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from harness.cli import main
from harness.eval_config import EvalConfig
from harness.evaluate import evaluate
from harness.manifest import get_spec
from test_shared_decode import manifest  # noqa: F401  (fixture)

# Runs the CLI under torchrun with the test models registered; NAN_ON_RANK1_AFTER=k makes the
# model sd-a return NaN on rank 1 after k forward calls (a rank that fails mid-run).
RUNNER = """
import os, sys
sys.path.insert(0, {tests!r})
import torch, conftest, test_shared_decode
forward = conftest.TinyConvNet.forward
calls = []
def failing(self, x):  # sd-a only (width 4)
    calls.append(self.conv.out_channels == 4)
    after = os.environ.get("NAN_ON_RANK1_AFTER")
    out = forward(self, x)
    return out * float("nan") if after and os.environ["RANK"] == "1" and sum(calls) > int(after) else out
conftest.TinyConvNet.forward = failing
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(tmp_path, manifest, smoke_root, *args, env=None):
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(runner),
               "eval", *args, "--coco-root", str(smoke_root), "--manifest", str(manifest), "--weights", "random",
               "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "runs")]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)]),
                   "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def _forked_ranks(tmp_path, manifest, smoke_root, *args, world=2):
    """The same CLI on `world` ranks forked from this process, each given the environment torchrun
    gives its workers (all the harness reads of it): the second launch of a run without starting
    torchrun and loading torch again. Returns the ranks' exit codes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["eval", *args, "--coco-root", str(smoke_root), "--manifest", str(manifest), "--weights", "random",
            "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(tmp_path / "runs")]

    def rank_main(rank):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 for the torchrun workers above
        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=rank_main, args=(rank,)) for rank in range(world)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(120)
    for process in ranks:
        if process.exitcode is None:
            process.kill()
    return [process.exitcode for process in ranks]


def test_two_ranks_score_as_one_process_and_resume_after_a_failing_rank(manifest, smoke_root, tmp_path):
    failed = _torchrun(tmp_path, manifest, smoke_root, "sd-c", "sd-a", env={"NAN_ON_RANK1_AFTER": "2"})
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if ": FAILED: " in line]
    assert len(lines) == 1 and "sd-a: FAILED: rank 1 of 2 failed: " in lines[0] and "NaN" in lines[0], failed.stderr
    [sd_a] = (tmp_path / "runs" / "sd-a").iterdir()
    assert not (sd_a / "record.json").exists()
    assert json.loads((sd_a / "progress.rank0-of-2.json").read_text())["done"] == 12  # rank 0 finished its half
    # the resume: two ranks again, forked (sd-c's scores above came from the real torchrun launch)
    assert _forked_ranks(tmp_path, manifest, smoke_root, "sd-a", "--resume") == [0, 0]
    for mid in ("sd-a", "sd-c"):
        [run_dir] = (tmp_path / "runs" / mid).iterdir()
        alone = evaluate(get_spec(mid, manifest), EvalConfig(coco_root=smoke_root, weights="random",
                                                             runs_root=tmp_path / "one", workers=0, progress=False)).run_dir
        assert np.array_equal(np.load(run_dir / "scores.npy"), np.load(alone / "scores.npy")), mid
        record = json.loads((run_dir / "record.json").read_text())
        assert record["metrics"] == json.loads((alone / "record.json").read_text())["metrics"]
        world = record["distributed"]
        assert world["world_size"] == 2 and [r["rank"] for r in world["ranks"]] == [0, 1]
        assert [r["rows"] for r in world["ranks"]] == ([[0, 12], [12, 24]] if mid == "sd-a" else [[0, 12], [12, 22]])
        assert not list(run_dir.glob("*.partial.npy")) and not list(run_dir.glob("progress*"))
