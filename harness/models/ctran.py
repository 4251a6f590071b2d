"""C-Tran (Lanchantin et al., CVPR 2021): image tokens and label tokens through one Transformer encoder.

As the authors' models/CTran.py (QData/C-Tran, commit 560cf6f), with their state-dict keys, so a
`best_model.pt` written by their main.py loads strictly:
  ResNet to layer4, no pooling, no projection: (B, 2048, H/32, W/32) -> H/32 * W/32 image tokens;
  label tokens = label_lt(0..L-1) [+ known_label_lt(state) when use_lmt], state unknown=0, negative=1,
  positive=2 (their mask -1/0/1); [image tokens; label tokens] -> LayerNorm -> post-norm encoder layers
  (heads 4, feed-forward = width, ReLU, dropout 0.1) -> output_linear on each label token, diagonal kept.
Their `weights_init` overwrites the whole state table, padding row included, so "unknown" is a fixed
random non-zero vector (the paper says zero); it gets no gradient (padding_idx=0). Reproduced as is.
Their backbone keeps torchvision's unused `fc` (its keys are in their checkpoints) and trains its
BatchNorm. `blocks`/`block` shrink the ResNet for tests and smoke runs; the default is ResNet-101.
"""
import math

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from harness.models import register_model
from harness.models.transformer import (
    EncoderLayer,  # their TransformerEncoderLayer: the same keys and maths
)

RESNET101_BLOCKS = (3, 4, 23, 3)
STATE_UNKNOWN, STATE_NEGATIVE, STATE_POSITIVE = 0, 1, 2


class Backbone(nn.Module):
    def __init__(self, blocks=RESNET101_BLOCKS, block="bottleneck"):
        super().__init__()
        kind = {"bottleneck": Bottleneck, "basic": BasicBlock}[block]
        self.base_network = ResNet(kind, list(blocks))  # random weights; ImageNet ones come from a file
        self.num_channels = 512 * kind.expansion

    def forward(self, x):
        n = self.base_network
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))


class SelfAttnLayer(nn.Module):
    def __init__(self, d_model, nhead, dropout):
        super().__init__()
        self.transformer_layer = EncoderLayer(d_model, nhead, d_model, dropout)

    def forward(self, x):  # (B, S, D)
        return self.transformer_layer(x.transpose(0, 1)).transpose(0, 1)


def weights_init(module):
    """Their init: uniform(+-1/sqrt(in)) for Linear and Embedding (bias too), LayerNorm 1/0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        stdv = 1.0 / math.sqrt(module.weight.size(1))
        module.weight.data.uniform_(-stdv, stdv)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.uniform_(-stdv, stdv)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)


def label_states(mask):
    """Their custom_replace(mask, 0, 1, 2): -1 (unknown) -> 0, 0 (negative) -> 1, 1 (positive) -> 2."""
    return (mask.round().long() + 1).clamp(STATE_UNKNOWN, STATE_POSITIVE)


def check_mask(mask, batch, num_labels):
    """A mask must be (batch, num_labels) with values -1 (unknown), 0 (negative), 1 (positive)."""
    if tuple(mask.shape) != (batch, num_labels):
        raise ValueError(f"label mask has shape {tuple(mask.shape)}, expected ({batch}, {num_labels}): "
                         "one row per image, one entry per label (-1 unknown, 0 negative, 1 positive)")
    bad = ~((mask == -1) | (mask == 0) | (mask == 1))
    if bool(bad.any()):
        raise ValueError(f"label mask holds {mask[bad][0].item()!r}; entries must be -1 (unknown), "
                         "0 (negative) or 1 (positive)")


class CTran(nn.Module):
    def __init__(self, num_labels=80, use_lmt=True, layers=3, heads=4, dropout=0.1,
                 blocks=RESNET101_BLOCKS, block="bottleneck"):
        super().__init__()
        self.num_labels, self.use_lmt = num_labels, use_lmt
        self.backbone = Backbone(blocks, block)
        hidden = self.backbone.num_channels
        self.label_lt = nn.Embedding(num_labels, hidden)
        self.known_label_lt = nn.Embedding(3, hidden, padding_idx=STATE_UNKNOWN)
        self.self_attn_layers = nn.ModuleList(SelfAttnLayer(hidden, heads, dropout) for _ in range(layers))
        self.output_linear = nn.Linear(hidden, num_labels)
        self.LayerNorm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)  # unused in forward, as theirs (no parameters)
        for m in (self.label_lt, self.known_label_lt, self.LayerNorm, self.self_attn_layers, self.output_linear):
            m.apply(weights_init)

    def forward(self, images, mask):
        """Logits (B, L); mask (B, L): -1 unknown, 0 known negative, 1 known positive."""
        check_mask(mask, images.shape[0], self.num_labels)
        features = self.backbone(images).flatten(2).transpose(1, 2)  # (B, HW, D)
        labels = self.label_lt.weight.unsqueeze(0).expand(images.shape[0], -1, -1)
        if self.use_lmt:
            labels = labels + self.known_label_lt(label_states(mask))
        x = self.LayerNorm(torch.cat((features, labels), 1))
        for layer in self.self_attn_layers:
            x = layer(x)
        out = self.output_linear(x[:, -self.num_labels:])  # (B, L, L)
        return torch.diagonal(out, dim1=1, dim2=2)  # label i read out by row i of the classifier


@register_model
def ctran(num_labels=80, use_lmt=True, layers=3, heads=4, dropout=0.1, blocks=RESNET101_BLOCKS,
          block="bottleneck", img_size=576):
    """img_size is the evaluation resolution (kept in the manifest's arch for bench); it sizes nothing."""
    return CTran(num_labels, use_lmt, layers, heads, dropout, tuple(blocks), block)
