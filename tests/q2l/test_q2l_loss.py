"""The asymmetric loss against their AsymmetricLossOptimized (fixture: tests/fixtures/q2l_authors/loss.npz,
made by make_fixtures.py, which also asserted bit-equality on the machine that made it, an AMD EPYC).

Bits do not travel between CPU models: sigmoid and log round differently on an Intel Xeon than on the
AMD EPYC that made the fixture, under the same ATen kernels. So this test holds a bound measured across
both CPUs, ATEN_CPU_CAPABILITY default / avx2 / avx512 and 1 and 2 threads (the worst case, scalar
kernels on the Xeon): float64 logits: loss equal, gradient within 4.4e-16 (bound 1e-15); float32
logits: loss within 7.2e-9 relative (bound 3e-8), gradient within 4.8e-7 absolute (bound 2e-6,
|gradient| <= 1.8, a float32 step there is 1.2e-7). Bit-equality beside their code is the fixture
script's check, where their code runs.
"""
import doctest

import numpy as np
import pytest
import torch
from q2l_authors import Q2L_FIXTURES, make

import harness.q2l.loss
from harness.q2l.loss import asymmetric_loss

THEIRS = np.load(Q2L_FIXTURES / "loss.npz")
CASES = sorted({key.rsplit("/", 1)[0] for key in THEIRS.files if key.endswith("/logits")})


def assert_theirs(loss, grad, their_loss, their_grad):
    """Within the bound measured across CPUs (see the module's docstring)."""
    if grad.dtype == torch.float64:
        assert loss == pytest.approx(their_loss, rel=1e-13, abs=0)
        torch.testing.assert_close(grad, their_grad, rtol=0, atol=1e-15)
    else:
        assert loss == pytest.approx(their_loss, rel=3e-8, abs=0)
        torch.testing.assert_close(grad, their_grad, rtol=0, atol=2e-6)


@pytest.mark.parametrize("dtgfl", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradient_equal_theirs(case, dtgfl):
    settings = make.LOSS_SETTINGS[case.split("/")[0]]
    logits = torch.tensor(THEIRS[f"{case}/logits"], requires_grad=True)
    targets = torch.tensor(THEIRS[f"{case}/targets"])
    loss = asymmetric_loss(logits, targets, **settings, disable_torch_grad_focal_loss=dtgfl)
    loss.backward()
    assert loss.dtype == torch.float64
    assert_theirs(loss.item(), logits.grad, THEIRS[f"{case}/dtgfl{int(dtgfl)}/loss"].item(),
                  torch.from_numpy(THEIRS[f"{case}/dtgfl{int(dtgfl)}/grad"]))


def test_the_focusing_weight_has_no_gradient_only_with_dtgfl():
    logits = torch.tensor(THEIRS["q2l/normal/logits"], requires_grad=True)
    targets = torch.tensor(THEIRS["q2l/normal/targets"])
    grads = []
    for dtgfl in (True, False):
        asymmetric_loss(logits, targets, disable_torch_grad_focal_loss=dtgfl).backward()
        grads.append(logits.grad.clone())
        logits.grad = None
    assert not torch.equal(*grads)


def test_micro_batches_with_the_whole_batch_size_add_up_to_the_whole_gradient():
    logits = torch.tensor(THEIRS["q2l/float64/logits"], requires_grad=True)
    targets = torch.tensor(THEIRS["q2l/float64/targets"])
    asymmetric_loss(logits, targets).backward()
    whole = logits.grad.clone()
    logits.grad = None
    for rows in (slice(0, 3), slice(3, 8)):
        asymmetric_loss(logits[rows], targets[rows], batch_size=len(logits)).backward()
    assert torch.equal(logits.grad, whole)  # each entry's gradient is elementwise: the same operations


def test_docstring_example():
    assert doctest.testmod(harness.q2l.loss, raise_on_error=False).failed == 0
