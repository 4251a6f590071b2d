"""Stochastic depth as the authors' Swin and CvT ran it (timm 0.4.x `DropPath`, their era's timm).

Per sample, the residual branch is kept with probability 1 - p and then divided by 1 - p. timm 0.4
draws `floor(keep + rand)`; timm >= 0.5 draws `bernoulli_(keep)`, other random draws for the same
seed, so the 0.4 form is rebuilt here. Identity in eval mode and at p = 0 (no draw).
"""
import torch
from torch import nn


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
        random_tensor.floor_()
        return x.div(keep_prob) * random_tensor

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


def linear_rates(rate: float, depth: int) -> list:
    """The authors' stochastic-depth decay rule: torch.linspace(0, rate, depth), one rate per block."""
    return [x.item() for x in torch.linspace(0, rate, depth, device="cpu")]  # cpu: also under a meta-device build
