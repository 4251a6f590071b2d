"""The EMA against their ModelEma (fixture: tests/fixtures/q2l_authors/ema.npz, made by make_fixtures.py
with their class). Elementwise float32 operations, each rounded once: the bits are the same on every
CPU (checked at ATEN_CPU_CAPABILITY default, avx2 and avx512, 1 and 2 threads)."""

import numpy as np
import pytest
import torch
from q2l_authors import Q2L_FIXTURES, make

from harness.q2l.ema import ModelEma

THEIRS = np.load(Q2L_FIXTURES / "ema.npz")


def state(prefix):
    return {key[len(prefix):]: torch.from_numpy(THEIRS[key]) for key in THEIRS.files if key.startswith(prefix)}


@pytest.mark.parametrize("device", [None, "cpu"])
@pytest.mark.parametrize("decay", make.EMA_DECAYS)
def test_every_entry_equals_theirs_after_every_step(decay, device):
    model = make.ema_model()
    model.load_state_dict(state(f"{decay}/start/"))
    ema = ModelEma(model, decay, device=device)
    assert not ema.module.training
    for step in range(len(make.EMA_COUNTS)):
        model.load_state_dict(state(f"{decay}/{step}/model/"))
        ema.update(model)
        theirs = state(f"{decay}/{step}/ema/")
        ours = ema.module.state_dict()
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            assert value.dtype == theirs[key].dtype and torch.equal(value, theirs[key]), (step, key)


def test_the_integer_count_is_truncated_as_theirs():
    model = make.ema_model()
    ema = ModelEma(model, 0.9997)
    model[1].num_batches_tracked.fill_(3333)
    ema.update(model)
    assert ema.module[1].num_batches_tracked.item() == 0  # 0.0003 * 3333 < 1
    model[1].num_batches_tracked.fill_(3334)
    ema.update(model)
    assert ema.module[1].num_batches_tracked.item() == 1


def test_a_model_of_another_shape_is_refused():
    ema = ModelEma(make.ema_model())
    with pytest.raises(ValueError, match="state entries"):
        ema.update(torch.nn.Linear(2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the offloaded EMA against one on the GPU")
def test_offloaded_ema_equals_the_one_on_the_gpu():
    torch.manual_seed(0)
    model = make.ema_model().cuda()
    on_gpu, offloaded = ModelEma(model), ModelEma(model, device="cpu")
    for _ in range(5):
        model.train()
        model(torch.randn(4, 3, 6, 6, device="cuda"))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        on_gpu.update(model)
        offloaded.update(model)
    for key, value in on_gpu.module.state_dict().items():
        assert torch.equal(value.cpu(), offloaded.module.state_dict()[key]), key
