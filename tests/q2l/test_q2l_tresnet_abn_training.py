"""A training step of TResNet on plain torch against their TResNet with inplace_abn's own kernels (fixture by
tests/fixtures/q2l_authors/make_tresnet_abn_grads.py): every ABN weight and bias gradient and the head's,
the zero-initialised residual ABNs included (torch.abs' gradient, 0 there, would be 100 % off)."""
import importlib.util

import numpy as np
from paths import FIXTURES

# Measured: 4.4e-6 at most (ATEN_CPU_CAPABILITY default / avx2 / avx512, 1 and 2 threads, MKL_CBWR COMPATIBLE):
# float32 rounding of the convolutions and of inplace_abn's xhat, recovered from its output.
BOUND = 5e-5
SCRIPT = FIXTURES / "q2l_authors" / "make_tresnet_abn_grads.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_tresnet_abn_grads", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tresnet_training_gradients_equal_inplace_abns(monkeypatch):
    monkeypatch.setenv("HARNESS_TRESNET_BN", "torch")
    script = _script()
    theirs = dict(np.load(FIXTURES / "q2l_authors" / "tresnet_abn_grads.npz"))
    initial = script.harness_model().state_dict()
    zero = [k for k in theirs if k.endswith("weight") and bool((initial[k] == 0).all())]
    assert len(zero) == 4 and all(np.all(theirs[k] != 0) for k in zero)  # one per stage, trained by inplace_abn
    ours = script.step(script.harness_model())
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert np.abs(ours[k] - v).max() <= BOUND * np.abs(v).max(), k
