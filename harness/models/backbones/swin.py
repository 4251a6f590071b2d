"""Swin Transformer backbone as Query2Label uses it (`q2l-swinl-384`: Swin-L, window 12, 384 px).

Rebuilds the authors' `lib/models/swin_transformer.py` (the original Microsoft layout, patch
merging at the END of a stage): same state-dict keys, including the persistent buffers
`relative_position_index` and `attn_mask` their checkpoints carry, and the same inference maths.
Q2L replaces the classifier by `forward_features`: the final LayerNorm'd tokens laid out as a
(B, C, H/32, W/32) map, so this module has no pooling and no head.

timm's Swin computes the same thing but keeps other keys (downsample at the start of a stage,
buffers not persistent); the tests use it as an independent check of the maths.
Stochastic depth (`drop_path_rate`, theirs 0.1 spread over the blocks; identity in eval) is there for
training; their dropouts are all 0.
"""
from collections import OrderedDict

import torch
from torch import nn

from harness.models.backbones.drop_path import DropPath, linear_rates


def window_partition(x, window_size):
    """(B, H, W, C) -> (B * num_windows, window_size**2, C); windows in row-major order per image."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)


def window_reverse(windows, window_size, H, W):
    """Inverse of `window_partition`: (B * num_windows, window_size**2, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window_size):
    """(N, N) index into the (2w-1)**2 bias table for every pair of tokens of a w x w window."""
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])                     # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (window_size - 1)      # 2, N, N, each in [0, 2w-2]
    return rel[0] * (2 * window_size - 1) + rel[1]


def shifted_window_mask(H, W, window_size, shift_size):
    """(num_windows, N, N) additive mask: -100 between tokens that the cyclic shift brought
    together from different image regions, 0 otherwise (the authors' value, not -inf)."""
    region = torch.zeros(1, H, W, 1)
    bands = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in bands:
        for ws in bands:
            region[:, hs, ws, :] = label
            label += 1
    windows = window_partition(region, window_size).squeeze(-1)            # num_windows, N
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with a learned relative position bias."""

    def __init__(self, dim, window_size, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:  # windows of one image are consecutive: view as (B, nW, heads, N, N)
            nW = mask.shape[0]
            attn = (attn.view(-1, nW, self.num_heads, N, N) + mask[None, :, None]).view(-1, self.num_heads, N, N)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(x)


class SwinBlock(nn.Module):
    """(Shifted-)window attention then MLP, both pre-norm with a residual."""

    def __init__(self, dim, resolution, num_heads, window_size, shift_size, mlp_ratio=4.0, drop_path=0.0):
        super().__init__()
        if min(resolution) <= window_size:  # one window covers the map: no partition, no shift
            window_size, shift_size = min(resolution), 0
        if resolution[0] % window_size or resolution[1] % window_size:
            raise ValueError(f"feature map {resolution} is not a multiple of window size {window_size}")
        self.resolution, self.window_size, self.shift_size = resolution, window_size, shift_size
        # registered first so the state-dict order matches the authors' (own buffers before children)
        mask = shifted_window_mask(*resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        H, W = self.resolution
        B, L, C = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x).view(B, H, W, C)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws), self.attn_mask), ws, H, W)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y.reshape(B, L, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C), LayerNorm, project to 2C: halves the resolution."""

    def __init__(self, resolution, dim):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        H, W = self.resolution
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class SwinStage(nn.Module):
    """Blocks alternating plain and shifted windows, then (except in the last stage) patch merging."""

    def __init__(self, dim, resolution, depth, num_heads, window_size, mlp_ratio, downsample, drop_paths=None):
        super().__init__()
        drop_paths = drop_paths or [0.0] * depth
        self.blocks = nn.ModuleList([
            SwinBlock(dim, resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                      drop_paths[i])
            for i in range(depth)])
        self.downsample = PatchMerging(resolution, dim) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution to tokens, then LayerNorm."""

    def __init__(self, patch_size, embed_dim, in_chans=3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Swin feature extractor for a fixed input size: image (B, 3, S, S) -> map (B, C, S/32, S/32)."""

    def __init__(self, img_size=224, patch_size=4, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0, drop_path_rate=0.0):
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        grid = img_size // patch_size
        rates = linear_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            size, first = grid // 2 ** i, sum(depths[:i])
            self.layers.append(SwinStage(embed_dim * 2 ** i, (size, size), depth, heads, window_size,
                                         mlp_ratio, downsample=i < len(depths) - 1,
                                         drop_paths=rates[first:first + depth]))
        self.num_channels = embed_dim * 2 ** (len(depths) - 1)
        self.out_size = grid // 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_channels)

    def forward(self, x):
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"input is {tuple(x.shape[-2:])}, this Swin was built for {self.img_size}x{self.img_size}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)                                                    # B, L, C (row-major tokens)
        return x.transpose(1, 2).reshape(x.shape[0], self.num_channels, self.out_size, self.out_size)


def build_swin(**kwargs):
    """A Swin of any size (tests use small ones); see `SwinTransformer` for the arguments."""
    return SwinTransformer(**kwargs)


def build_swin_l_384(img_size=384, drop_path_rate=0.0):
    """Swin-L, ImageNet-22k, window 12: the backbone of `q2l-swinl-384` (1536 channels, 12x12 at 384).
    Their training used drop_path_rate 0.1 (build_swin_transformer's default)."""
    return SwinTransformer(img_size=img_size, embed_dim=192, depths=(2, 2, 18, 2),
                           num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=drop_path_rate)
