"""`harness rescore --emulate-ranks W`: the rows as Query2Label's q2l_infer.py saw them on W GPUs,
checked against torch's own DistributedSampler (shuffle=False), rank files concatenated rank 0 first."""
import json

import numpy as np
import pytest
import torch
from fake_records import eval_record
from torch.utils.data.distributed import DistributedSampler

from harness import records
from harness.cli import main
from harness.metrics import compute_metrics


def sampler_rows(n, world_size):
    """What each rank's DistributedSampler yields, rank 0 first: the rows their voc_mAP reads."""
    data = torch.utils.data.TensorDataset(torch.arange(n))
    return np.concatenate([list(DistributedSampler(data, num_replicas=world_size, rank=r, shuffle=False))
                           for r in range(world_size)])


def tied_problem(n=203, c=6, seed=4):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.3).astype(np.uint8)
    scores = np.round(np.clip(labels * 0.2 + rng.random((n, c)) * 0.6, 0, 1), 1).astype(np.float32)  # heavy ties
    return scores, labels


@pytest.mark.parametrize("world_size", [1, 2, 3, 8, 300])
def test_order_is_the_distributed_samplers(world_size):
    from harness.eval.ranks import distributed_order

    np.testing.assert_array_equal(distributed_order(203, world_size), sampler_rows(203, world_size))


def test_rescore_emulating_ranks_gives_the_sampler_ordered_map(tmp_path, capsys):
    scores, labels = tied_problem()
    run_dir = records.new_run_dir(tmp_path, "q2l-r101-448")
    records.write_record(run_dir, eval_record(run_dir, scores, labels, n_boot=10))
    plain = compute_metrics(scores, labels, "q2l", ci=False)["mAP"]
    moved = 0
    for world_size in (1, 4, 8):
        assert main(["rescore", str(run_dir), "--no-ci", "--emulate-ranks", str(world_size)]) == 0
        out = json.loads(capsys.readouterr().out)
        rows = sampler_rows(len(scores), world_size)
        expected = compute_metrics(scores[rows], labels[rows], "q2l", ci=False)
        assert out["mAP"] == expected["mAP"] and out["n_images"] == len(rows)
        saved = json.loads((run_dir / f"rescore-q2l-ranks{world_size}.json").read_text())
        assert saved["emulated_ranks"] == world_size and saved["metrics"]["mAP"] == expected["mAP"]
        moved += out["mAP"] != plain
    assert moved  # ties and padding do move the number: the emulation is not the plain order


def test_bad_rank_count_is_one_line(tmp_path, capsys):
    scores, labels = tied_problem(20, 3)
    run_dir = records.new_run_dir(tmp_path, "q2l-r101-448")
    records.write_record(run_dir, eval_record(run_dir, scores, labels, n_boot=10))
    assert main(["rescore", str(run_dir), "--no-ci", "--emulate-ranks", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--emulate-ranks" in err[0]
