"""Activation checkpointing changes no bit: same weights, buffers and optimizer state after a few
AdamW steps, with dropout and DropPath drawing (Swin), BatchNorm statistics updating in training
mode (CvT's projections, TResNet's ABN) and frozen FrozenBatchNorm stages (ResNet-101). CPU, seeded."""
import copy
import functools

import pytest
import torch
from memory_helpers import TINY_MODELS, batch, differing, make_optimizer, mean_over_images_loss, snapshot

from harness.q2l import checkpointing
from harness.q2l.checkpointing import apply_activation_checkpointing, remove_activation_checkpointing

STEPS = 3


def train(model, steps=STEPS, seed=0):
    """Seeded steps of forward, loss, backward, AdamW and OneCycleLR; the state afterwards."""
    optimizer, scheduler = make_optimizer(model, steps)
    model.train()
    torch.manual_seed(seed)
    for step in range(steps):
        images, targets = batch(step, batch_size=2)
        optimizer.zero_grad()
        mean_over_images_loss(model(images), targets).backward()
        optimizer.step()
        scheduler.step()
    return snapshot(model, optimizer)


@functools.cache
def trained_plain(family):
    """train() of the family's plain model (seeded: the model each test builds): computed once, only read."""
    return train(TINY_MODELS[family]())


@pytest.mark.parametrize("family", ["swin", "cvt", "r101", "tresnet"])
def test_checkpointed_training_is_bit_identical(family):
    plain = TINY_MODELS[family]()
    start = snapshot(plain)
    checkpointed = copy.deepcopy(plain)
    n_blocks = apply_activation_checkpointing(checkpointed)
    assert n_blocks >= 4
    assert list(checkpointed.state_dict()) == list(plain.state_dict())  # the authors' keys
    assert [n for n, _ in checkpointed.named_parameters()] == [n for n, _ in plain.named_parameters()]

    expected, got = trained_plain(family), train(checkpointed)
    assert differing(expected, got) == []
    # the run moved the weights and, where there are, the statistics
    moved = differing(start, {k: got[k] for k in start})
    assert any(k.endswith("weight") for k in moved)
    assert any(k.endswith("running_mean") for k in moved) == (family in ("cvt", "tresnet"))


def test_the_recompute_would_update_batchnorm_statistics_twice_without_the_restore(monkeypatch):
    """The restore is what keeps CvT exact: without it the running statistics differ."""
    plain = TINY_MODELS["cvt"]()
    checkpointed = copy.deepcopy(plain)
    apply_activation_checkpointing(checkpointed)
    monkeypatch.setattr(checkpointing, "running_statistics", lambda module: [])
    wrong = differing(trained_plain("cvt"), train(checkpointed))
    assert wrong and all("running_" in k or "num_batches_tracked" in k for k in wrong)


def test_the_recompute_without_the_rng_state_draws_other_dropout_masks(monkeypatch):
    """preserve_rng_state is what keeps Swin's DropPath and the transformer's dropout exact."""
    plain = TINY_MODELS["swin"]()
    checkpointed = copy.deepcopy(plain)
    apply_activation_checkpointing(checkpointed)
    real = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(checkpointing, "checkpoint",
                        lambda fn, *a, **kw: real(fn, *a, **{**kw, "preserve_rng_state": False}))
    assert differing(trained_plain("swin"), train(checkpointed))


def test_without_gradients_blocks_run_plainly_and_checkpointing_can_be_removed():
    model = TINY_MODELS["cvt"]().eval()
    images, _ = batch(0)
    with torch.no_grad():
        expected = model(images)
    apply_activation_checkpointing(model)
    calls = []
    real = torch.utils.checkpoint.checkpoint
    try:
        checkpointing.checkpoint = lambda *a, **kw: calls.append(1) or real(*a, **kw)
        with torch.no_grad():
            assert torch.equal(model(images), expected)
        assert calls == []
        model(images).sum().backward()
        assert calls
    finally:
        checkpointing.checkpoint = real
    remove_activation_checkpointing(model)
    assert not any(isinstance(m, checkpointing.CheckpointedBlock) for m in model.modules())
    assert type(model.transformer.encoder.layers[0]).__name__ == "EncoderLayer"


def test_a_model_without_blocks_is_refused():
    with pytest.raises(ValueError, match="no block to checkpoint"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))
