"""The sine position table of Query2Label (DETR's sine embedding, precomputed for one grid).

Q2L computes the table once for the training resolution and stores it as a persistent
buffer `pe` (1, 2 * num_pos_feats, H, W): the released checkpoints carry it, so a model
only loads, and only runs, at its own resolution. No padding mask: every cell counts.
"""
import math

import torch
from torch import nn


def sine_table(height, width, num_pos_feats, temperature=10000, scale=2 * math.pi):
    """(1, 2 * num_pos_feats, height, width): y features first, then x, sin/cos interleaved."""
    ones = torch.ones((1, height, width))
    y = ones.cumsum(1, dtype=torch.float32)
    x = ones.cumsum(2, dtype=torch.float32)
    eps = 1e-6  # normalised to (0, scale], as DETR with normalize=True
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32)
    dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
    pos_x = x[:, :, :, None] / dim_t
    pos_y = y[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats, grid_size, temperature=10000):
        super().__init__()
        self.register_buffer("pe", sine_table(grid_size, grid_size, num_pos_feats, temperature))

    def forward(self, features):
        if features.shape[-2:] != self.pe.shape[-2:]:
            raise ValueError(
                f"feature map {tuple(features.shape[-2:])} does not match the position table "
                f"{tuple(self.pe.shape[-2:])}: this model runs only at the resolution it was built for"
            )
        return self.pe.repeat((features.size(0), 1, 1, 1))
