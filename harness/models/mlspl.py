"""MLSPL model (Cole et al., CVPR 2021): torchvision ResNet-50 without its fc, then Linear(2048, C).

As the authors' models.py: the backbone's 2048-d average-pooled output feeds a fresh linear
classifier. In linear-only mode there is no backbone: the input is a batch of precomputed
2048-d features. Weights are random here; ImageNet V1 weights are loaded by
harness.mlspl.features.load_imagenet_v1.
"""
import numpy as np
import torch
from torch import nn
from torchvision.models import ResNet, resnet50
from torchvision.models.resnet import Bottleneck

from harness.models import register_model

FEATURE_DIM = 2048


class MLSPLResNet50(nn.Module):
    def __init__(self, num_classes=80, linear_only=False, layers=None):
        """`layers` (blocks per stage, same widths and 2048-d output) builds a shallow network for
        tests; None is ResNet-50's (3, 4, 6, 3)."""
        super().__init__()
        self.backbone = None
        if not linear_only:
            self.backbone = ResNet(Bottleneck, list(layers)) if layers else resnet50(weights=None)
            self.backbone.fc = nn.Identity()  # keeps conv1 .. avgpool + flatten: (B, 2048)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, images):
        return self.backbone(images)

    def forward(self, x):
        """Logits; x is images (B, 3, H, W), or features (B, 2048) in linear-only mode."""
        return self.fc(x if self.backbone is None else self.backbone(x))


class LabelEstimator(nn.Module):
    """ROLE's g: one free logit per (training image, class); forward gives sigmoid estimates of rows."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, rows):
        return torch.sigmoid(self.logits[rows])


def logit(p, eps=1e-5):
    """Inverse sigmoid with p clipped to [eps, 1 - eps], as their inverse_sigmoid: the ratio in torch,
    the log through numpy (np.log and torch.log differ in the last bit of some float32 entries)."""
    p = torch.as_tensor(p).clamp(eps, 1 - eps)
    return torch.from_numpy(np.asarray(np.log((p / (1 - p)).numpy())))


def initial_label_logits(observed, generator=None):
    """ROLE's starting table: uniform in [logit(0.4), logit(0.6)], observed positives at logit(0.995)."""
    q = float(logit(torch.tensor(0.6, dtype=torch.float64)))
    table = q * (2 * torch.rand(tuple(observed.shape), generator=generator) - 1)
    table[torch.as_tensor(observed) == 1] = float(logit(torch.tensor(0.995, dtype=torch.float64)))
    return table


@register_model
def mlspl_resnet50(num_classes=80, linear_only=False, layers=None):
    return MLSPLResNet50(num_classes=num_classes, linear_only=linear_only, layers=layers)
