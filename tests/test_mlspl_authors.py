"""MLSPL against fixtures made by the authors' own code (tests/data/mlspl_authors/make_fixtures.py,
elijahcole/single-positive-multi-label at 89152d5): bit-equal in float32, not approximately."""
import importlib.util
import json
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
