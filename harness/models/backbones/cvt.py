"""CvT backbone as Query2Label uses it (`q2l-cvtw24-384`: CvT-w24, ImageNet-22k, 384 px).

Rebuilds the authors' `lib/models/cls_cvt/cls_cvt.py` with `cvt-w24-384x384.yaml`: same
state-dict keys (BatchNorm `num_batches_tracked` of the depth-wise projections included) and
the same inference maths. Details that matter and are easy to get wrong:
- three stages, each a strided convolutional token embedding + LayerNorm, then blocks whose
  q/k/v come from depth-wise conv + BatchNorm projections (k and v with stride 2), each
  followed by a Linear; the MLP uses QuickGELU (x * sigmoid(1.702 x)), not GELU;
- attention scores are scaled by dim ** -0.5 of the FULL width, not of the head width;
- the last stage prepends a cls token: it takes part in attention (it skips the convolutional
  projections) but Q2L drops it. Q2L sets the model's `cls_token` flag to False, so its
  `forward_features` returns the final LayerNorm applied to the spatial tokens, as a
  (B, C, H/16, W/16) map: (B, 1024, 24, 24) at 384. No head here.
Stochastic depth (`drop_path_rates` per stage, theirs 0 / 0 / 0.3 spread over each stage's blocks;
identity in eval) is there for training; their dropouts are all 0.
"""
from collections import OrderedDict

import torch
from torch import nn

from harness.models.backbones.drop_path import DropPath, linear_rates


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back to the input dtype, as the authors' (matters under AMP)."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def to_map(tokens, h, w):
    """(B, h*w, C) -> (B, C, h, w) as a channels-last view, the strides the authors' einops gives
    (the convolution kernel, hence low-precision rounding under AMP, depends on them)."""
    return tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)


def dw_bn(dim, kernel_size, stride, padding):
    """Depth-wise convolution + BatchNorm: CvT's convolutional projection (`dw_bn`)."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(dim, dim, kernel_size, stride=stride, padding=padding, bias=False, groups=dim),
        bn=nn.BatchNorm2d(dim)))


class ConvAttention(nn.Module):
    def __init__(self, dim, num_heads, with_cls_token, kernel_size=3, stride_q=1, padding_q=1,
                 stride_kv=2, padding_kv=1, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.with_cls_token = with_cls_token
        self.scale = dim ** -0.5  # the authors' choice: full width, not head width
        self.conv_proj_q = dw_bn(dim, kernel_size, stride_q, padding_q)
        self.conv_proj_k = dw_bn(dim, kernel_size, stride_kv, padding_kv)
        self.conv_proj_v = dw_bn(dim, kernel_size, stride_kv, padding_kv)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def heads(self, x):
        B, T, C = x.shape
        return x.view(B, T, self.num_heads, C // self.num_heads).transpose(1, 2)

    def forward(self, x, h, w):
        if self.with_cls_token:
            cls, x = x[:, :1], x[:, 1:]
        grid = to_map(x, h, w)
        q, k, v = (conv(grid).flatten(2).transpose(1, 2)
                   for conv in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v))
        if self.with_cls_token:  # the cls token bypasses the convolutions
            q, k, v = (torch.cat([cls, t], dim=1) for t in (q, k, v))
        q, k, v = self.heads(self.proj_q(q)), self.heads(self.proj_k(k)), self.heads(self.proj_v(v))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).flatten(2)
        return self.proj(x)


class CvTBlock(nn.Module):
    def __init__(self, dim, num_heads, with_cls_token, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = ConvAttention(dim, num_heads, with_cls_token)
        self.norm2 = LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=QuickGELU(), fc2=nn.Linear(hidden, dim)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvEmbed(nn.Module):
    """Overlapping strided convolution to tokens, then LayerNorm."""

    def __init__(self, in_chans, dim, patch_size, stride, padding):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=stride, padding=padding)
        self.norm = LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class CvTStage(nn.Module):
    """Token embedding, optional cls token, blocks; returns the spatial map (B, C, h, w) without the cls token."""

    def __init__(self, in_chans, dim, depth, num_heads, patch_size, stride, padding, with_cls_token,
                 drop_path_rate=0.0):
        super().__init__()
        # registered before the children so the state-dict order matches the authors'
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        if with_cls_token:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.patch_embed = ConvEmbed(in_chans, dim, patch_size, stride, padding)
        self.blocks = nn.ModuleList([CvTBlock(dim, num_heads, with_cls_token, drop_path=rate)
                                     for rate in linear_rates(drop_path_rate, depth)])

    def forward(self, x):
        x, h, w = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x, h, w)
        if self.cls_token is not None:
            x = x[:, 1:]
        return to_map(x, h, w)


class ConvolutionalVisionTransformer(nn.Module):
    """CvT feature extractor: image (B, 3, H, W) -> LayerNorm'd map (B, dims[-1], H/16, W/16)."""

    def __init__(self, dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6),
                 patch_sizes=(7, 3, 3), strides=(4, 2, 2), paddings=(2, 1, 1),
                 cls_token=(False, False, True), drop_path_rates=(0.0, 0.0, 0.0)):
        super().__init__()
        in_chans = 3
        for i, dim in enumerate(dims):
            stage = CvTStage(in_chans, dim, depths[i], num_heads[i], patch_sizes[i], strides[i], paddings[i],
                             cls_token[i], drop_path_rates[i])
            setattr(self, f"stage{i}", stage)
            in_chans = dim
        self.num_stages = len(dims)
        self.num_channels = dims[-1]
        self.norm = LayerNorm(dims[-1])

    def forward(self, x):
        for i in range(self.num_stages):
            x = getattr(self, f"stage{i}")(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def build_cvt(**kwargs):
    """A CvT of any size (tests use small ones); see `ConvolutionalVisionTransformer` for the arguments."""
    return ConvolutionalVisionTransformer(**kwargs)


def build_cvt_w24(img_size=384, drop_path_rates=(0.0, 0.0, 0.0)):
    """CvT-w24 (ImageNet-22k, 384): the backbone of `q2l-cvtw24-384` (1024 channels, stride 16).

    The network is fully convolutional in size; `img_size` only checks that the map is S/16.
    """
    if img_size % 16:
        raise ValueError(f"CvT-w24 needs an input size divisible by 16, got {img_size}")
    return ConvolutionalVisionTransformer(dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16),
                                          drop_path_rates=drop_path_rates)
