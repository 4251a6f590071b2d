"""TResNet (Ridnik et al.) as in the Q2L and ASL checkpoints, with or without the inplace_abn package.

The authors' layers are InPlaceABN(Sync): BatchNorm whose scale is |weight| + eps, then
leaky-ReLU (slope 1e-2 in the stem, 1e-3 in the blocks) or identity. `ABN` below runs, in eval
mode, inplace_abn's own kernel when that package is importable (and works on the input's device),
as the authors' code did; else the same maths on plain torch (CPU or GPU), whose rounding differs
from the kernel's (logits up to a few 1e-5 apart with realistic running statistics; see README).
`HARNESS_TRESNET_BN=torch` forces plain torch. Same parameter names either way, so their state
dicts load unchanged. Keys follow theirs: body.{conv1, layer1..4}, head.fc.
"""
from collections import OrderedDict
from importlib.metadata import PackageNotFoundError, version

import torch
import torch.nn.functional as F
from torch import nn

from harness.inputs import environment

_KERNEL_WORKS = {}  # device type -> inplace_abn's function, or None where it cannot run


def _inplace_abn_kernel(device_type):
    """inplace_abn's function when it is importable and runs on this device (probed once), else None."""
    if environment.tresnet_bn() == "torch":
        return None
    if device_type not in _KERNEL_WORKS:
        try:
            from inplace_abn.functions import inplace_abn  # lazy: an optional extra, absent on most machines

            probe = torch.ones(1, 1, 1, 1, device=device_type)
            one, zero = torch.ones(1, device=device_type), torch.zeros(1, device=device_type)
            with torch.inference_mode():  # as evaluation runs it
                inplace_abn(probe, one, zero, zero.clone(), one.clone(), False, 0.0, 1e-5, "identity", 0.0)
            _KERNEL_WORKS[device_type] = inplace_abn
        except Exception:  # not installed, or built without this device's kernels
            _KERNEL_WORKS[device_type] = None
    return _KERNEL_WORKS[device_type]


def batch_norm_used(model, device):
    """What computes the TResNet batch norm of `model` in eval mode on `device` (None: no TResNet)."""
    if not any(isinstance(m, ABN) for m in model.modules()):
        return None
    if _inplace_abn_kernel(torch.device(device).type) is not None:
        return f"inplace_abn {inplace_abn_version()} kernel (as the authors' InPlaceABN)"
    return "plain torch batch_norm with weight |w| + eps (inplace_abn not importable or not on this device)"


def inplace_abn_version():
    """The version of the inplace_abn that runs: its own `__version__` (inplace_abn/_version.py, which
    their sdist ships: 1.1.0), else the installed metadata's. A wheel built from that sdist without
    setuptools_scm installed says 0.0.0 in its metadata (setup.py's `use_scm_version` is then an
    unknown option), whatever source was built."""
    import inplace_abn  # lazy: an optional extra; only asked once its kernel has been imported

    own = getattr(inplace_abn, "__version__", None)
    if own:
        return own
    try:
        found = version("inplace-abn")
    except PackageNotFoundError:
        return "(version unknown)"
    return found if found != "0.0.0" else "(version unknown: its metadata says 0.0.0)"


class _AbsWithSignOfZeroOne(torch.autograd.Function):
    """|w| whose gradient takes the sign of w with sign(0) = +1, as inplace_abn's backward
    (functions.py: `dweight = sum_xhat_dy; dweight[weight < 0] *= -1`); torch.abs gives 0 at w == 0,
    which would leave a weight at exactly 0 (TResNet's zero-initialised residual ABNs) there forever."""

    @staticmethod
    def forward(ctx, weight):
        ctx.save_for_backward(weight)
        return weight.abs()

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return torch.where(weight < 0, -grad, grad)


def abn_scale(weight, eps):
    """inplace_abn's scale |weight| + eps; with a gradient, the gradient inplace_abn gives."""
    if torch.is_grad_enabled() and weight.requires_grad:
        return _AbsWithSignOfZeroOne.apply(weight) + eps
    return weight.abs() + eps


class ABN(nn.BatchNorm2d):
    """Activated BatchNorm with inplace_abn's scale |weight| + eps (it keeps the op invertible)."""

    def __init__(self, num_features, activation="leaky_relu", slope=1e-2):
        super().__init__(num_features)
        self.activation, self.slope = activation, slope

    def forward(self, x):
        kernel = None if self.training else _inplace_abn_kernel(x.device.type)
        if kernel is not None:  # their kernel, in place on x (a convolution's output, used nowhere else)
            return kernel(x, self.weight, self.bias, self.running_mean, self.running_var, False, 0.0, self.eps,
                          self.activation, self.slope)
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean, self.running_var, abn_scale(self.weight, self.eps), self.bias,
                         self.training, self.momentum, self.eps)
        return F.leaky_relu(x, self.slope) if self.activation == "leaky_relu" else x


def conv_abn(cin, cout, kernel_size=3, activation="leaky_relu", slope=1e-2):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride=1, padding=kernel_size // 2, bias=False),
        ABN(cout, activation, slope),
    )


class SpaceToDepth(nn.Module):
    """(N, C, H, W) -> (N, 16 C, H/4, W/4), channel order (dy, dx, c) as the authors'."""

    def forward(self, x):
        n, c, h, w = x.size()
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(n, c * 16, h // 4, w // 4)


class BlurDownsample(nn.Module):
    """Anti-aliased stride 2: depth-wise [1 2 1]^T [1 2 1] / 16 blur on reflect padding."""

    def __init__(self, channels):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), "reflect"), self.filt.to(x.dtype), stride=2, groups=x.shape[1])


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduced):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        s = x.view(x.size(0), x.size(1), -1).mean(-1).view(x.size(0), x.size(1), 1, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


def _strided(conv, stride, channels):
    return conv if stride == 1 else nn.Sequential(conv, BlurDownsample(channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__()
        self.conv1 = _strided(conv_abn(inplanes, planes, slope=1e-3), stride, planes)
        self.conv2 = conv_abn(planes, planes, activation="identity")
        self.downsample = downsample
        self.se = SqueezeExcite(planes, max(planes // 4, 64)) if use_se else None

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, use_se=True):
        super().__init__()
        self.conv1 = conv_abn(inplanes, planes, kernel_size=1, slope=1e-3)
        self.conv2 = _strided(conv_abn(planes, planes, slope=1e-3), stride, planes)
        self.conv3 = conv_abn(planes, planes * 4, kernel_size=1, activation="identity")
        self.downsample = downsample
        # SE acts on the narrow middle (planes), sized from the output width: as the authors'.
        self.se = SqueezeExcite(planes, max(planes * 4 // 8, 64)) if use_se else None

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return F.relu(self.conv3(out) + residual)


class TResNet(nn.Module):
    """TResNet body; with num_classes, also the global average pool and `head.fc` (ASL)."""

    def __init__(self, layers, blocks, width_factor=1.0, num_classes=None):
        super().__init__()
        self.inplanes = planes = int(64 * width_factor)
        stages = [("SpaceToDepth", SpaceToDepth()), ("conv1", conv_abn(3 * 16, planes))]
        for i, (n, block) in enumerate(zip(layers, blocks)):
            stride = 1 if i == 0 else 2
            stages.append((f"layer{i + 1}", self._make_layer(block, planes * 2 ** i, n, stride, use_se=i < 3)))
        self.body = nn.Sequential(OrderedDict(stages))
        self.num_channels = self.inplanes
        if num_classes:
            self.head = nn.Sequential(OrderedDict([("fc", nn.Linear(self.num_channels, num_classes))]))
        self._init_weights()

    def _make_layer(self, block, planes, blocks, stride, use_se):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            pool = [nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)] if stride == 2 else []
            downsample = nn.Sequential(*pool, conv_abn(self.inplanes, planes * block.expansion, 1, "identity"))
        layers = [block(self.inplanes, planes, stride, downsample, use_se)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, use_se=use_se) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self):
        # The authors' initialisation: only matters for training from scratch.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
        for m in self.modules():  # residual branches start at zero
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.conv2[1].weight)
            elif isinstance(m, Bottleneck):
                nn.init.zeros_(m.conv3[1].weight)

    def forward(self, x):
        x = self.body(x)
        if not hasattr(self, "head"):
            return x
        return self.head(x.view(x.size(0), x.size(1), -1).mean(dim=2))


# The authors' sizes. `layers` and `width_factor` may be overridden (tests build tiny ones).
BASIC2 = [BasicBlock, BasicBlock, Bottleneck, Bottleneck]


def tresnet_m(num_classes=None, layers=(3, 4, 11, 3), width_factor=1.0):
    """TResNet-M (ASL and ML-Decoder alike): 2048 output channels."""
    return TResNet(list(layers), BASIC2, width_factor, num_classes)


def tresnet_l(num_classes=None, layers=(4, 5, 18, 3), width_factor=1.2):
    """TResNet-L (ImageNet-1k; ASL, Q2L `tresnetl`): 2432 output channels."""
    return TResNet(list(layers), BASIC2, width_factor, num_classes)


def tresnet_xl(num_classes=None, layers=(4, 5, 24, 3), width_factor=1.3):
    """TResNet-XL of ASL: width 1.3, so int(64 * 1.3) = 83 planes and 2656 output channels."""
    return TResNet(list(layers), BASIC2, width_factor, num_classes)


def tresnet_l_v2(num_classes=None, layers=(3, 4, 23, 3), width_factor=1.0):
    """TResNet-L v2: all bottlenecks, 2048 channels (Q2L's `tresnet2`, ML-Decoder's `tresnet_l`)."""
    return TResNet(list(layers), [Bottleneck] * 4, width_factor, num_classes)


def tresnet_xl_v2(num_classes=None, layers=(3, 8, 34, 5), width_factor=1.0):
    """ML-Decoder's `tresnet_xl`: all bottlenecks, 2048 channels (not ASL's TResNet-XL)."""
    return TResNet(list(layers), [Bottleneck] * 4, width_factor, num_classes)


def fuse_bn(model):
    """Fold each ABN into the convolution before it, in place, with the arithmetic of the authors'
    fusion (ML-Decoder's validate.py: InPlaceABN -> ABN with weight |w| + eps, then
    `fuse_bn_recursively`): the same ops in the same order, so the fused weights are theirs bit
    for bit. Only for inference; the fused model has other keys and no longer loads checkpoints."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2
                and isinstance(m[0], nn.Conv2d) and isinstance(m[1], ABN)]:
        conv, abn = seq[0], seq[1]
        with torch.no_grad():
            gamma = abn.weight.abs() + abn.eps
            denom = torch.sqrt(abn.running_var + abn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              groups=conv.groups, bias=True).to(conv.weight.device)
            fused.weight.copy_(conv.weight * gamma.div(denom)[:, None, None, None])
            fused.bias.copy_(abn.bias - gamma.mul(abn.running_mean).div(denom))
        seq[0] = fused
        seq[1] = nn.LeakyReLU(abn.slope) if abn.activation == "leaky_relu" else nn.Identity()
    return model
