"""The memory techniques as `harness q2l train` runs them: checkpointing and both offloads leave the
training's bits unchanged (CPU); the budget planner picks a plan or refuses, before any folder. The wiring is
the same for every backbone: the small --smoke ones train here (q2l_train_helpers.SMALL, SWIN)."""

import pytest
import torch
from q2l_train_helpers import SMALL, SWIN, smoke_config, tiny_coco, without_drop_path

from harness.cli import main
from harness.q2l.run import fit

BATCH = 4  # 8 train images: 2 steps an epoch, so the second reads the state the first left (offloaded or not)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return tiny_coco(tmp_path_factory.mktemp("q2l-mem-coco"), n_val=4, n_train=8)


@pytest.fixture(scope="module")
def plain(coco, tmp_path_factory):
    """A one-epoch run with a budget every plan fits: the first plan, no technique, trains it (a plain run,
    recorded with its budget); read by two tests."""
    return fit(smoke_config(coco, tmp_path_factory.mktemp("q2l-plain"), SMALL, epochs=1, batch_size=BATCH,
                           vram_budget="64GB"))


def _state(finished):
    return torch.load(finished.run_dir / "state.pt", weights_only=True)


def test_checkpointing_and_offloads_train_the_same_bits(plain, coco, tmp_path):
    assert plain.record.train["memory_techniques"] == []
    plain = _state(plain)
    with_all = fit(smoke_config(coco, tmp_path / "all", SMALL, epochs=1, batch_size=BATCH, activation_checkpointing=True,
                                offload_ema=True, offload_optimizer=True))
    techniques = with_all.record.train["memory_techniques"]
    assert techniques == ["activation checkpointing", "EMA on CPU", "AdamW state on CPU"]
    other = _state(with_all)
    for part in ("model", "ema"):
        assert all(torch.equal(plain[part][k], other[part][k]) for k in plain[part]), part


def test_micro_batches_train_the_full_batch_to_float_summation_order(coco, tmp_path, monkeypatch):
    """Swin's LayerNorms see no batch (as R101's FrozenBatchNorm): chunks of 2 give the batch of 4's gradients
    up to the order of float sums (dropout and DropPath off: a chunk draws its own masks). Measured: the weights
    differ by 1.3e-3 of the L2 norm of their change in these 2 steps (R101, batches of 8 full-size photos in
    chunks of 4: 1.4e-3; mostly attention's key bias, whose exact gradient is zero: AdamW turns its rounding
    noise into +-lr steps); the bound is 1e-2. Training on other images differs by about the whole change
    (1.12, measured)."""
    without_drop_path(monkeypatch)
    no_dropout = {"dropout": 0.0}
    config = smoke_config(coco, tmp_path / "whole", SWIN, epochs=1, batch_size=BATCH, recipe_changes=no_dropout)
    initial = _initial(config)
    whole = _state(fit(config))
    chunked = _state(fit(smoke_config(coco, tmp_path / "chunks", SWIN, epochs=1, batch_size=BATCH,
                                      recipe_changes=no_dropout, micro_batch=2)))
    w, c, i = (torch.cat([v.flatten() for k, v in s.items() if v.is_floating_point()])
               for s in (whole["model"], chunked["model"], initial))
    assert not torch.equal(w, c)
    assert float((w - c).norm() / (w - i).norm()) < 1e-2


def _initial(config):
    from harness.q2l.backbones import build_model

    torch.manual_seed(config.seed)
    return build_model(config.recipe, smoke=True).state_dict()


def test_a_budget_below_every_plan_is_one_line_before_any_folder(coco, tmp_path, capsys):
    code = main(["q2l", "train", SMALL, "--coco-root", str(coco), "--smoke", "--runs", str(tmp_path / "r"),
                 "--vram-budget", "1MiB", "--no-progress"])
    errors = [x for x in capsys.readouterr().err.splitlines() if "error" in x]  # the planner logs each plan it measured
    assert code == 2 and len(errors) == 1 and "no memory plan fits the VRAM budget" in errors[0]
    assert not (tmp_path / "r").exists()


def test_a_budget_that_fits_as_written_is_recorded(plain):
    t = plain.record.train
    assert t["memory_techniques"] == [] and t["vram_budget"] == "64GB"
    assert t["memory_plans_measured"][0]["peak_bytes"] > 0
