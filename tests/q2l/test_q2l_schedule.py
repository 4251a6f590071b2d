"""AdamW + OneCycleLR against their construction (fixtures: tests/fixtures/q2l_authors/schedule*.json,
their main_worker lines run by make_fixtures.py under today's torch and under torch 1.9.1, which
asserted the harness's lr and beta1 bit-equal to theirs at every step of every run, and torch 1.9.1's
equal to today's).

lr and beta1 are Python floats from math.cos, which is the C library's: its bits can move with the
machine. Measured here (glibc 2.36) on the two 80-epoch runs: with glibc's FMA cos (any x86 with FMA)
bit-equal; with its plain cos (GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2,-FMA,-AVX,-AVX512F) 18 of
103,441 and 5 of 51,681 lr values differ, by up to 3.2e-14 relative (near the end of the schedule,
where cos + 1 cancels), beta1 not at all. So values are compared within 1e-13 relative.
"""
import json
import warnings

import numpy as np
import pytest
import torch
from q2l_authors import Q2L_FIXTURES

from harness.q2l.schedule import build_optimizer, build_schedule, steps_per_epoch

RUNS = [(path.name, run) for path in sorted(Q2L_FIXTURES.glob("schedule*.json"))
        for run in json.loads(path.read_text())["runs"]]


def recorded_steps(run):
    """The steps a run's record holds: every one of a short run; every `every`-th and the last three of a
    long one."""
    total, record = run["steps_per_epoch"] * run["epochs"] + 1, run["lr_per_step"]
    if isinstance(record, list):
        return range(total)
    assert record["count"] == run["beta1_per_step"]["count"] == total
    return [*range(0, total, record["every"]), *range(total - 3, total)]


def harness_values(lr, batch_size, steps, epochs, at):
    """lr and beta1 before each step of `at` (the last: after the last step); the scheduler alone steps (it
    reads no gradient). One step() to the next step; step(k) to a later one: OneCycleLR's lr and beta1 are a
    closed form of its step count, so it gives the floats of k single steps (a long run's 100,000 single
    steps took a third of a second, for the 400 values its record holds)."""
    optimizer = build_optimizer(torch.nn.Linear(3, 2), lr, batch_size, weight_decay=1e-2)
    before = optimizer.param_groups[0]["lr"]
    scheduler = build_schedule(optimizer, lr, steps, epochs)
    lrs, betas = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()", step(k) deprecated
        for step in at:
            if step == scheduler.last_epoch + 1:
                scheduler.step()
            elif step != scheduler.last_epoch:
                scheduler.step(step)
            lrs.append(optimizer.param_groups[0]["lr"])
            betas.append(optimizer.param_groups[0]["betas"][0])
    return before, lrs, betas


def assert_theirs(values, record):
    """Every value of a short run, every 257th and the last three of a long one (within the bound)."""
    if isinstance(record, dict):
        record = record["values"] + record["last"]
    np.testing.assert_allclose(values, record, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name, run", RUNS, ids=[f"{name}-{run['steps_per_epoch']}x{run['epochs']}-B{run['batch_size']}"
                                                 for name, run in RUNS])
def test_lr_and_beta1_at_every_step_equal_theirs(name, run):
    before, lrs, betas = harness_values(run["lr"], run["batch_size"], run["steps_per_epoch"], run["epochs"],
                                        recorded_steps(run))
    assert before == run["lr_before_the_schedule"]
    assert_theirs(lrs, run["lr_per_step"])
    assert_theirs(betas, run["beta1_per_step"])


def test_both_torch_versions_were_compared():
    assert {name for name, _ in RUNS} == {"schedule.json", "schedule_torch1.9.json"}


def test_one_optimizer_group_over_every_trainable_parameter_with_their_settings():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)  # a frozen part, as their conv1 + layer1
    optimizer = build_optimizer(model, 1e-4, 64, weight_decay=1e-2)
    (group,) = optimizer.param_groups
    assert group["params"] == [p for p in model.parameters() if p.requires_grad]
    assert (group["weight_decay"], group["betas"], group["eps"]) == (1e-2, (0.9, 0.999), 1e-8)


@pytest.mark.parametrize("n, batch, world", [(82783, 64, 1), (82783, 128, 2), (82783, 128, 8), (100, 8, 4),
                                             (101, 12, 3), (7, 8, 1)])
def test_steps_per_epoch_is_their_loader_length(n, batch, world):
    sampler = torch.utils.data.distributed.DistributedSampler(range(n), num_replicas=world, rank=world - 1)
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch // world, sampler=sampler, drop_last=True)
    assert steps_per_epoch(n, batch, world) == len(loader)
