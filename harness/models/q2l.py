"""Query2Label (Liu et al., 2021): backbone features -> transformer decoder with one query per
label -> a group-wise linear layer giving one logit per label.

Module paths reproduce the authors' state-dict keys: `backbone.0.*` (features; CNNs under `body.`),
`backbone.1.pe` (the position table), `transformer.*`, `query_embed`, `fc.W`, `fc.b`.
"""
import importlib
import math

import torch
from torch import nn

from harness.models import register_model
from harness.models.position import PositionEmbeddingSine
from harness.models.transformer import Transformer

# Backbone name (the authors' `--backbone`) -> output stride of its last feature map.
BACKBONE_STRIDES = {"resnet101": 32, "tresnetl": 32, "tresnetl_v2": 32, "swin_L_384_22k": 32, "CvT_w24": 16}
# Backbone name -> (module, builder). Only the module asked for is imported: torchvision's import costs
# each process about a second, and the TResNet, Swin and CvT backbones need none of it.
BACKBONE_BUILDERS = {"resnet101": ("resnet", "build_resnet101"), "tresnetl": ("tresnet", "tresnet_l"),
                     "tresnetl_v2": ("tresnet", "tresnet_l_v2"), "swin_L_384_22k": ("swin", "build_swin_l_384"),
                     "CvT_w24": ("cvt", "build_cvt_w24")}


def build_backbone(name, img_size, layers=None, width=None):
    """The module at `backbone.0`. The authors wrap CNNs in a `body` holder (keys
    `backbone.0.body.*`) but use Swin and CvT as they are (keys `backbone.0.*`).
    Each backbone file is loaded only when its model is built (BACKBONE_BUILDERS).
    `layers` and `width` (TResNet's width factor) shrink a CNN for tests; None keeps the authors' size."""
    if name not in BACKBONE_BUILDERS:
        raise ValueError(f"unknown Q2L backbone '{name}' (known: {', '.join(BACKBONE_STRIDES)})")
    module, builder = BACKBONE_BUILDERS[name]
    build = getattr(importlib.import_module(f"harness.models.backbones.{module}"), builder)
    if name == "resnet101":
        return Backbone(build(layers))
    if name.startswith("tresnet"):
        return Backbone(build(**{**({"layers": layers} if layers else {}), **({"width_factor": width} if width else {})}))
    return build(img_size=img_size)


class Backbone(nn.Module):
    """Holds a CNN feature extractor as `body`, giving the authors' `backbone.0.body.*` keys."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.num_channels = body.num_channels

    def forward(self, x):
        return self.body(x)


class GroupWiseLinear(nn.Module):
    """One linear classifier per label, each on its own query's output: (B, K, d) -> (B, K)."""

    def __init__(self, num_classes, hidden_dim):
        super().__init__()
        stdv = 1.0 / math.sqrt(hidden_dim)
        self.W = nn.Parameter(torch.empty(1, num_classes, hidden_dim).uniform_(-stdv, stdv))
        self.b = nn.Parameter(torch.empty(1, num_classes).uniform_(-stdv, stdv))

    def forward(self, x):
        return (self.W * x).sum(-1) + self.b


class Query2Label(nn.Module):
    def __init__(self, features, transformer, num_classes, img_size, stride):
        super().__init__()
        hidden_dim = transformer.d_model
        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 (got {img_size})")
        position = PositionEmbeddingSine(hidden_dim // 2, img_size // stride)
        self.backbone = nn.Sequential(features, position)
        self.transformer = transformer
        # The released models use the backbone channels as hidden size: no projection.
        channels = features.num_channels
        self.input_proj = nn.Identity() if channels == hidden_dim else nn.Conv2d(channels, hidden_dim, 1)
        self.query_embed = nn.Embedding(num_classes, hidden_dim)
        self.fc = GroupWiseLinear(num_classes, hidden_dim)
        self.img_size = img_size

    def forward(self, images):
        src = self.backbone[0](images)
        pos = self.backbone[1](src).to(src.dtype)
        hs = self.transformer(self.input_proj(src), self.query_embed.weight, pos)
        return self.fc(hs)


@register_model
def q2l(backbone, hidden_dim, dim_feedforward, enc_layers, dec_layers, nheads, num_classes, img_size,
        release_folder=None, dropout=0.1, pre_norm=False, backbone_layers=None, backbone_width=None):
    """Query2Label with random weights; `release_folder` only names the authors' download folder.
    `backbone_layers` (ResNet or TResNet blocks per stage) and `backbone_width` (TResNet width factor)
    build a small backbone for tests; released models never set them."""
    if backbone not in BACKBONE_STRIDES:
        raise ValueError(f"unknown Q2L backbone '{backbone}' (known: {', '.join(BACKBONE_STRIDES)})")
    if backbone_width and not backbone.startswith("tresnet"):
        raise ValueError(f"backbone_width is a TResNet width factor; '{backbone}' has none")
    features = build_backbone(backbone, img_size, backbone_layers, backbone_width)
    transformer = Transformer(hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout, pre_norm)
    model = Query2Label(features, transformer, num_classes, img_size, BACKBONE_STRIDES[backbone])
    # The authors' names for these settings, checked against their config_new.json on load.
    model.arch = dict(backbone=backbone, hidden_dim=hidden_dim, dim_feedforward=dim_feedforward,
                      enc_layers=enc_layers, dec_layers=dec_layers, nheads=nheads, num_class=num_classes,
                      img_size=img_size, pre_norm=pre_norm)
    return model


# ---------------------------------------------------------------- the checkpoint's keys (as timm's checkpoint_filter_fn)

SIZES_FROM_CHECKPOINT = ("dim_feedforward", "enc_layers", "dec_layers")  # the manifest's are assumptions until pinned


def checkpoint_sizes(state_dict):
    """Sizes a Q2L state dict fixes: hidden_dim, dim_feedforward, layer counts, classes, grid."""
    def count(part):
        prefix = f"transformer.{part}.layers."
        found = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
        return max(found) + 1 if found else 0

    sizes = {"enc_layers": count("encoder"), "dec_layers": count("decoder")}
    for key in ("transformer.decoder.layers.0.linear1.weight", "transformer.encoder.layers.0.linear1.weight"):
        if key in state_dict:
            sizes["dim_feedforward"] = state_dict[key].shape[0]
            break
    if "query_embed.weight" in state_dict:
        sizes["num_class"], sizes["hidden_dim"] = state_dict["query_embed.weight"].shape
    if "backbone.1.pe" in state_dict:
        sizes["grid"] = tuple(state_dict["backbone.1.pe"].shape[-2:])
    return sizes


def _same(value, expected):
    if isinstance(expected, bool):
        return value is expected
    if isinstance(expected, int):
        try:
            return int(value) == expected
        except (TypeError, ValueError):
            return False
    return value == expected


def config_problems(config, model, ckpt_sizes, eval_spec=None):
    """Problems between config_new.json, the checkpoint's weights and the model built here."""
    problems = []
    for key, value in sorted(ckpt_sizes.items()):
        if key in config and key != "grid" and not _same(config[key], value):
            problems.append(f"config says {key}={config[key]} but the checkpoint's weights have {value} "
                            f"(the two files do not belong together)")
    for key, value in model.arch.items():
        if key in config and not _same(config[key], value):
            problems.append(f"config says {key}={config[key]} but the model is built with {value} "
                            f"(fix arch.{key} in the manifest)")
    for flag in ("keep_other_self_attn_dec", "keep_first_self_attn_dec", "keep_input_proj"):
        if config.get(flag) is True:
            problems.append(f"config sets {flag}, which the released-model architecture here does not have")
    if config.get("position_embedding", "sine") not in ("sine", "v2"):
        problems.append(f"config uses position_embedding={config['position_embedding']}; only 'sine' is built here")
    if eval_spec is not None:
        if "orid_norm" in config and config["orid_norm"] != (eval_spec.normalize == "none"):
            problems.append(f"config says orid_norm={config['orid_norm']} but the manifest's eval.normalize "
                            f"is {eval_spec.normalize}")
        if "img_size" in config and not _same(config["img_size"], eval_spec.resolution):
            problems.append(f"config says img_size={config['img_size']} but the manifest's eval.resolution "
                            f"is {eval_spec.resolution}")
    return problems
