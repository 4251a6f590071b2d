"""Micro-batches: the full batch's gradient up to float summation order where no batch statistic is
computed (Swin, ResNet-101 with FrozenBatchNorm); refused where one is (CvT, TResNet)."""
import pytest
import torch
from memory_helpers import TINY_MODELS, batch, make_optimizer, mean_over_images_loss, snapshot, tiny_swin_q2l, train_steps

from harness.errors import UserError
from harness.q2l.micro_batches import BATCH_STATISTICS, accumulate, batch_statistics_reason, check_micro_batch


def gradients_of_one_batch(model, micro_batch, batch_size=6):
    images, targets = batch(0, batch_size)
    loss = accumulate(model.train(), images, targets, mean_over_images_loss, micro_batch)
    return loss, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def no_dropout_swin():
    # masks are drawn per chunk (same distribution, other draws): compared without any
    return tiny_swin_q2l(drop=0, dropout=0)


@pytest.fixture(scope="module")
def full_batch_gradients():
    """The whole batch's loss and gradients, computed once for every micro-batch size (seeded, read only)."""
    return gradients_of_one_batch(no_dropout_swin(), None)


@pytest.mark.parametrize("micro_batch", [1, 2, 4])  # 4: chunks of 4 and 2 images
def test_accumulated_gradient_is_the_full_batch_gradient(full_batch_gradients, micro_batch):
    """Bound 1e-5 of the largest gradient; measured at most 6.7e-7 (batch 6, micro-batches 1-4)
    with 1 and 2 threads under ATEN_CPU_CAPABILITY=default/avx2/avx512 and MKL_CBWR=COMPATIBLE/
    AVX2/AVX512 (AMD EPYC, torch 2.15)."""
    loss_full, full = full_batch_gradients
    loss_micro, micro = gradients_of_one_batch(no_dropout_swin(), micro_batch)
    assert (micro - full).abs().max() <= 1e-5 * full.abs().max()
    assert abs(loss_micro.item() - loss_full.item()) <= 1e-6 * abs(loss_full.item())


def learning_rates(steps):
    """The lr of each step of train_steps (OneCycleLR as it sets them)."""
    optimizer, scheduler = make_optimizer(torch.nn.Linear(1, 1), steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def key_bias(name, tensor):
    """The key slice of an attention's packed q/k/v bias: exactly zero gradient (adding a constant
    to every key leaves the softmax unchanged), so AdamW turns rounding noise there into ±lr steps."""
    if name.endswith(("in_proj_bias", "qkv.bias")):
        third = tensor.shape[0] // 3
        return slice(third, 2 * third)
    return None


@pytest.fixture(scope="module")
def full_batch_weights():
    """The weights after 3 whole-batch steps, computed once for every micro-batch size (seeded, read only)."""
    return snapshot(train_steps(no_dropout_swin(), 3, batch_size=6)[0])


@pytest.mark.parametrize("micro_batch", [2, 3, 4])
def test_weights_after_three_adamw_steps_are_within_the_measured_bound(full_batch_weights, micro_batch):
    """After 3 AdamW + OneCycleLR steps at batch 6: every weight within 2e-4 of the full-batch run,
    except the attention key biases, within 2 x the summed learning rates (AdamW moves a weight by
    about lr a step whatever its gradient's size). Measured: at most 4.0e-5 and 2.4e-4 (Σ lr is
    1.3e-3) over the settings of the gradient test; one step of the wrong sign would be ~1e-3.
    Loose by nature (AdamW's update barely depends on the gradient's scale): the gradient test
    above is the one that catches a wrong chunk weight."""
    model_m, _, _ = train_steps(no_dropout_swin(), 3, batch_size=6, micro_batch=micro_batch)
    full, micro = full_batch_weights, snapshot(model_m)
    lr_sum = sum(learning_rates(3))
    checked = 0
    for name in full:
        if not full[name].is_floating_point():
            continue
        diff = (full[name].double() - micro[name].double()).abs()
        keys = key_bias(name, diff)
        if keys is not None:
            assert diff[keys].max() <= 2 * lr_sum, name
            diff[keys] = 0
        assert diff.max() <= 2e-4, name
        checked += diff.numel()
    assert checked > 100_000


def test_the_whole_batch_is_exactly_a_plain_backward():
    a, b = no_dropout_swin().train(), no_dropout_swin().train()
    images, targets = batch(0)
    mean_over_images_loss(a(images), targets).backward()
    loss = accumulate(b, images, targets, mean_over_images_loss, None)
    assert loss.item() == mean_over_images_loss(a(images), targets).item()
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


def test_backward_and_autocast_are_the_callers():
    """GradScaler's scaled backward and autocast reach every chunk."""
    model = no_dropout_swin().train()
    images, targets = batch(0)
    scaled, contexts = [], []

    class Context:
        def __enter__(self):
            contexts.append(torch.is_grad_enabled())

        def __exit__(self, *exc):
            return False

    accumulate(model, images, targets, mean_over_images_loss, 3,
               backward=lambda loss: scaled.append(loss.item()) or (loss * 8).backward(), autocast=Context)
    assert len(scaled) == len(contexts) == 2
    assert sum(scaled) == pytest.approx(mean_over_images_loss(model(images), targets).item(), rel=1e-6)


def test_a_ddp_model_synchronises_on_the_last_chunk_only():
    model = no_dropout_swin().train()
    synced = []

    class NoSync:
        def __enter__(self):
            synced.append(False)

        def __exit__(self, *exc):
            return False

    model.no_sync = NoSync
    images, targets = batch(0, 6)
    accumulate(model, images, targets, mean_over_images_loss, 2)
    assert synced == [False, False]  # three chunks: the first two without synchronisation


@pytest.mark.parametrize("backbone", ["CvT_w24", "tresnetl", "tresnetl_v2"])
def test_micro_batches_are_refused_where_batchnorm_sees_the_batch(backbone):
    with pytest.raises(UserError) as e:
        check_micro_batch(backbone, 8, 16)
    message = str(e.value)
    assert "\n" not in message and backbone in message and ("BatchNorm" in message or "ABN" in message)
    check_micro_batch(backbone, 16, 16)  # the whole batch is no micro-batch
    check_micro_batch(backbone, None, 16)


@pytest.mark.parametrize("backbone", ["swin_L_384_22k", "resnet101"])
def test_micro_batches_are_allowed_without_batch_statistics(backbone):
    assert backbone not in BATCH_STATISTICS
    check_micro_batch(backbone, 1, 16)


@pytest.mark.parametrize("micro_batch, batch_size, problem", [(0, 16, "at least 1"), (17, 16, "larger than")])
def test_a_micro_batch_out_of_range_is_one_line(micro_batch, batch_size, problem):
    with pytest.raises(UserError, match=problem):
        check_micro_batch("swin_L_384_22k", micro_batch, batch_size)


@pytest.mark.parametrize("family", ["cvt", "tresnet"])
def test_accumulate_refuses_a_model_whose_batchnorm_normalises_over_the_batch(family):
    model = TINY_MODELS[family]().train()
    images, targets = batch(0)
    with pytest.raises(UserError, match="normalises over the batch"):
        accumulate(model, images, targets, mean_over_images_loss, 2)
    assert batch_statistics_reason(TINY_MODELS["r101"]().train()) is None  # FrozenBatchNorm2d
    assert batch_statistics_reason(model.eval()) is None  # running statistics in eval mode
