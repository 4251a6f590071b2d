"""TResNet batch norm: inplace_abn's own kernel when it is importable (as the authors' InPlaceABN),
plain torch otherwise, and the record says which. The kernel tests skip where inplace_abn is absent."""
import pytest
import torch
from torch import nn

from harness.models.backbones.tresnet import ABN, BasicBlock, Bottleneck, TResNet, batch_norm_used


def tiny_tresnet(seed=0):
    """A TResNet with the real block types, narrow and shallow, with calibrated running statistics."""
    torch.manual_seed(seed)
    model = TResNet([1, 1, 1, 1], [BasicBlock, BasicBlock, Bottleneck, Bottleneck], 0.25, num_classes=5)
    for m in model.modules():
        if isinstance(m, ABN):
            nn.init.uniform_(m.weight, -1.5, 1.5)  # negative weights too: |w| + eps matters
            nn.init.normal_(m.bias, 0, 0.2)
            m.momentum = 1.0  # running statistics := those of the batch below (realistic, not random)
    model.train()
    with torch.no_grad(), _plain_torch():
        model(torch.rand(8, 3, 64, 64))
    return model.eval()


class _plain_torch:
    def __enter__(self):
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("HARNESS_TRESNET_BN", "torch")

    def __exit__(self, *exc):
        self.patch.undo()


def test_without_the_kernel_plain_torch_runs_and_is_recorded(monkeypatch):
    monkeypatch.setenv("HARNESS_TRESNET_BN", "torch")
    model = tiny_tresnet()
    assert batch_norm_used(model, "cpu").startswith("plain torch")
    assert batch_norm_used(nn.Linear(2, 2), "cpu") is None  # no TResNet: nothing to say


def as_authors_layers(model):
    """A copy of `model` whose every ABN is the real inplace_abn.InPlaceABN with the same state."""
    import copy

    from inplace_abn import InPlaceABN

    theirs = copy.deepcopy(model)
    for _name, module in list(theirs.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ABN):
                layer = InPlaceABN(child.num_features, activation=child.activation, activation_param=child.slope)
                layer.load_state_dict(child.state_dict())
                setattr(module, child_name, layer.eval())
    return theirs


def test_the_kernel_runs_when_installed_and_equals_the_authors_layers():
    pytest.importorskip("inplace_abn")
    model = tiny_tresnet()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        ours = model(x.clone())
        theirs = as_authors_layers(model)(x.clone())
        with _plain_torch():
            plain = model(x.clone())
    assert batch_norm_used(model, "cpu").startswith("inplace_abn")
    assert torch.equal(ours, theirs)  # bit for bit: the same kernel
    assert not torch.equal(ours, plain)  # and it is not plain torch that ran
    torch.testing.assert_close(ours, plain, rtol=0, atol=1e-4)


def test_the_recorded_version_is_the_built_source_not_a_wheels_0_0_0(monkeypatch):
    """A wheel built from their sdist without setuptools_scm says 0.0.0 in its metadata, but ships the
    sdist's inplace_abn/_version.py: the record names that version."""
    import sys
    import types

    import harness.models.backbones.tresnet as tresnet

    built = types.ModuleType("inplace_abn")
    built.__version__ = "1.1.0"
    monkeypatch.setitem(sys.modules, "inplace_abn", built)
    monkeypatch.setattr(tresnet, "version", lambda name: "0.0.0")
    assert tresnet.inplace_abn_version() == "1.1.0"
    del built.__version__  # no _version.py: the metadata, unless it is the 0.0.0 of a build without setuptools_scm
    assert tresnet.inplace_abn_version() == "(version unknown: its metadata says 0.0.0)"
    monkeypatch.setattr(tresnet, "version", lambda name: "1.1.0")
    assert tresnet.inplace_abn_version() == "1.1.0"


def inplace_abn_weight_gradient(x, weight, bias, eps, slope, grad_out):
    """dL/dweight of a training-mode InPlaceABN, written from inplace_abn's own backward (1.0.x to 1.1.0):
    backward_reduce inverts the leaky ReLU and the affine map, xhat = (y - bias) / (|w| + eps), sums
    xhat * dy per channel, and functions.py flips the sign where `weight < 0` (so sign(0) = +1)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True)  # biased, as their statistics()
    gamma = (weight.abs() + eps).view(1, -1, 1, 1)
    y = (x - mean) / torch.sqrt(var + eps) * gamma + bias.view(1, -1, 1, 1)
    dy = torch.where(y >= 0, grad_out, grad_out * slope)  # their LeakyReLU backward (y >= 0: slope 1)
    xhat = (y - bias.view(1, -1, 1, 1)) / gamma
    dweight = (xhat * dy).sum(dim=(0, 2, 3))
    dweight[weight < 0] *= -1
    return dweight


@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
def test_training_weight_gradient_is_inplace_abns_also_at_a_weight_of_exactly_zero(monkeypatch, activation):
    """A weight of exactly 0 (TResNet's zero-initialised residual ABNs) gets inplace_abn's gradient, sign +1:
    torch.abs' gradient there is 0, which would keep such a weight at 0 for the whole training."""
    monkeypatch.setenv("HARNESS_TRESNET_BN", "torch")
    torch.manual_seed(0)
    layer = ABN(4, activation, 1e-2).double().train()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.0, 0.7, -0.4, 0.0], dtype=torch.float64))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64))
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    grad_out = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    layer(x.clone()).backward(grad_out)
    slope = 1e-2 if activation == "leaky_relu" else 1.0
    want = inplace_abn_weight_gradient(x, layer.weight.detach(), layer.bias.detach(), layer.eps, slope, grad_out)
    assert bool((want[[0, 3]] != 0).all())  # the zero weights do get a gradient from inplace_abn
    torch.testing.assert_close(layer.weight.grad, want, rtol=1e-9, atol=1e-12)
    assert torch.equal(layer.weight.grad.sign(), want.sign())


def test_the_forward_and_eval_paths_keep_plain_abs(monkeypatch):
    """Without a gradient (evaluation, the EMA copy) |w| + eps is torch.abs as before: the same bits."""
    monkeypatch.setenv("HARNESS_TRESNET_BN", "torch")
    model = tiny_tresnet()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
    assert torch.equal(model(x), plain)  # with autograd on, the forward's bits are unchanged
