"""MLSPL against fixtures made by the authors' own code (tests/data/mlspl_authors/make_fixtures.py,
elijahcole/single-positive-multi-label at 89152d5): bit-equal in float32, not approximately."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.mlspl.losses import compute_loss

FIXTURES = Path(__file__).parent / "data" / "mlspl_authors"
_spec = importlib.util.spec_from_file_location("make_mlspl_fixtures", FIXTURES / "make_fixtures.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


@pytest.fixture(scope="module")
def loss_grads():
    return np.load(FIXTURES / "losses.npz")


@pytest.mark.parametrize("name", list(make.LOSS_NAMES))
def test_loss_gradients_bit_equal_to_theirs_with_the_grid_dimension(name, loss_grads):
    for b in range(make.BATCHES):
        observed, preds_np, estimates_np = (torch.from_numpy(a) for a in make.loss_inputs(name, b))
        preds = preds_np.clone().requires_grad_()  # (GRID, N, L): grid points sharing one batch of rows
        estimates = estimates_np.clone().requires_grad_()
        compute_loss(name, preds, observed, estimates, k=make.K).backward()
        assert torch.equal(preds.grad, torch.from_numpy(loss_grads[f"{name}_grad_preds"][b]))
        if name == "ROLE":
            assert torch.equal(estimates.grad, torch.from_numpy(loss_grads["ROLE_grad_estimates"][b]))


def test_linear_init_table_equals_their_inverse_sigmoid():
    from harness.mlspl.train import _initial_table

    estimates = make.estimate_inputs()
    table = _initial_table(torch.zeros(estimates.shape), estimates, generator=None)
    assert torch.equal(table, torch.from_numpy(np.load(FIXTURES / "logits.npz")["logits"]))


@pytest.fixture(scope="module")
def their_training():
    return json.loads((FIXTURES / "training.json").read_text())


def _tiny_splits(loss):
    """The toy set of the fixture, split by the harness as by their datasets.py."""
    from harness.mlspl.prepare import split_train_val

    data = make.tiny_data()
    train_rows, val_rows = split_train_val(len(data["train"]["labels"]))
    source, test = data["train"], data["val"]
    observed = torch.from_numpy(source["labels_obs"][train_rows])
    return ((torch.from_numpy(source["feats"][train_rows]), observed),
            (torch.from_numpy(source["feats"][val_rows]), source["labels"][val_rows]),
            (torch.from_numpy(test["feats"]), test["labels"]))


def _sha(t):
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(t).tobytes()).hexdigest()


TRAINED = [("AN", 8), ("ROLE", 8), ("ROLE", 16)]


def _harness_training():
    """The harness's grid (all lrs of a loss and batch size at once) on the fixture's runs."""
    from harness.mlspl.config import TrainConfig
    from harness.mlspl.train import train_linear_group

    their = json.loads((FIXTURES / "training.json").read_text())
    out = {}
    for loss, batch_size in TRAINED:
        lrs = [r["lr"] for r in their["runs"] if r["loss"] == loss and r["batch_size"] == batch_size]
        train, val, test = _tiny_splits(loss)
        config = TrainConfig(loss, epochs=their["epochs"], seed=their["seed"])
        out[f"{loss}-{batch_size}"] = [
            {"best_epoch": r.best_epoch, "weight": _sha(r.head["weight"].numpy()), "bias": _sha(r.head["bias"].numpy()),
             "table": _sha(r.table.numpy()) if loss == "ROLE" else None, "test_scores": _sha(r.test_scores),
             "val_mAP": [h["val_mAP"] for h in r.history], "test_mAP": r.test_map}
            for r in train_linear_group(train, val, test, config, batch_size, lrs)]
    return out


def test_linear_training_is_their_script_with_torch_seeded_bit_for_bit(their_training):
    """Their train.py loop + torch.manual_seed(P['seed']): the harness's grid (all lrs at once) gives
    each run's val and test mAP of every epoch and its best weights, bit for bit. Both run under the
    fixture's portable numerics, which must be set before torch loads: here in a child process."""
    assert their_training["numerics"] == make.PORTABLE_NUMERICS
    env = {**os.environ, **make.PORTABLE_NUMERICS, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, check=True)
    harness_training = json.loads(done.stdout)
    for loss, batch_size in TRAINED:
        theirs = [r for r in their_training["runs"] if r["loss"] == loss and r["batch_size"] == batch_size]
        ours = harness_training[f"{loss}-{batch_size}"]
        assert len(ours) == len(theirs) > 0
        for r, t in zip(ours, theirs):
            assert r["best_epoch"] == t["best_epoch"]
            assert r["weight"] == t["best_weight_sha256"], (loss, batch_size, t["lr"])
            assert r["bias"] == t["best_bias_sha256"]
            assert r["table"] == t["best_table_sha256"]
            assert r["test_scores"] == t["best_test_scores_sha256"]
            np.testing.assert_allclose(r["val_mAP"], t["val_mAP"], rtol=1e-14)
            assert r["test_mAP"] == pytest.approx(t["test_mAP"][r["best_epoch"]], rel=1e-14)


def _replayed_batches(seed, n, batch_size, epochs, semantics="torch>=1.9"):
    from harness.mlspl.authors_rng import eval_iterators, shuffled_rows
    from harness.mlspl.train import _random_start

    generator = torch.Generator().manual_seed(seed)
    _random_start(generator, torch.zeros(n, 80))
    batches = []
    for _ in range(epochs):
        order = shuffled_rows(n, generator, semantics)
        batches.append(order[: n // batch_size * batch_size].view(-1, batch_size).tolist())
        eval_iterators(generator)
    return batches


def test_replayed_batches_equal_torch_dataloader_shuffle_under_the_same_seed():
    """torch.manual_seed, their model's draws, then per epoch their three loaders' iterators."""
    from torch.utils.data import DataLoader

    n, batch_size, seed, epochs = 37, 4, 5, 4
    torch.manual_seed(seed)
    torch.nn.Linear(2048, 80), torch.rand(n, 80)  # their FCNet, their LabelEstimator's table
    train = DataLoader(range(n), batch_size=batch_size, shuffle=True, drop_last=True)
    val, test = (DataLoader(range(m), batch_size=batch_size, drop_last=True) for m in (11, 13))
    expected = []
    for _ in range(epochs):
        expected.append([b.tolist() for b in train])
        for _ in val:
            pass
        for _ in test:
            pass
    assert _replayed_batches(seed, n, batch_size, epochs) == expected


def test_fine_tuning_loader_draws_as_their_dataloader():
    """The fine-tuning loaders (a sampler and the iterators drawing from one generator) = theirs on the global one."""
    from torch.utils.data import DataLoader

    from harness.mlspl.authors_rng import AuthorsShuffle

    n, seed = 23, 9
    torch.manual_seed(seed)
    expected = [[b.tolist() for b in DataLoader(range(n), batch_size=4, shuffle=True, drop_last=True)]
                for _ in range(3)]
    generator = torch.Generator().manual_seed(seed)
    ours = DataLoader(range(n), batch_size=4, sampler=AuthorsShuffle(n, generator), drop_last=True,
                      generator=generator)
    assert [[b.tolist() for b in ours] for _ in range(3)] == expected


def test_their_batches_in_their_script_replayed(their_training):
    """The train batches their train.py drew (torch.manual_seed added), every run and epoch."""
    for run in their_training["runs"]:
        ours = _replayed_batches(their_training["seed"], 80, run["batch_size"], their_training["epochs"])
        assert ours == run["train_batches"]


def test_their_batches_under_their_torch_1_7_replayed():
    """Their train.py run with their requirements' torch 1.7.0: its RandomSampler permutes with the
    global generator; replayed with semantics "torch-1.7-1.8"."""
    their = json.loads((FIXTURES / "training_torch1.7.json").read_text())
    assert their["torch"].startswith("1.7")
    for run in their["runs"]:
        ours = _replayed_batches(their["seed"], 80, run["batch_size"], their["epochs"], "torch-1.7-1.8")
        assert ours == run["train_batches"]


if __name__ == "__main__":  # the child process of the linear training test
    print(json.dumps(_harness_training()))
