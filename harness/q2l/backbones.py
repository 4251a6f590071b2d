"""The model a Query2Label training starts from, as their main_mlc.py builds it.

- Sizes from the recipe (their hidden_dim, dim_feedforward, layers, heads, dropout); `input_proj` is an
  identity when the backbone's channels equal the hidden size (theirs always is, issue #16).
- Stochastic depth as their backbones: Swin drop_path_rate 0.1 (build_swin_transformer's default),
  CvT-w24 0 / 0 / 0.3 per stage (their cvt-w24-384x384.yaml).
- Pretrained backbone as their backbone.py loads it (head dropped, the rest loaded; their strict=False
  is made a check here: every weight of the backbone must come from the file), the file fetched from
  the manifest's `pretrained_backbones` and its sha256 locked once it has loaded.
- Frozen as theirs: in a CNN backbone (ResNet-101, TResNet) every parameter outside layer2-4 (conv1 and
  layer1; ResNet's BatchNorm is FrozenBatchNorm, TResNet's ABN statistics still update in train mode);
  Swin and CvT fully trained.
- `--smoke`: a tiny backbone of the same family, a small transformer, 64 px (flagged smoke).
"""
import torch

from harness.checkpoints import find_state_dict, read_pickle
from harness.errors import UserError
from harness.models.backbones.cvt import ConvolutionalVisionTransformer, build_cvt_w24
from harness.models.backbones.swin import SwinTransformer, build_swin_l_384
from harness.models.q2l import BACKBONE_STRIDES, Backbone, Query2Label, build_backbone
from harness.models.transformer import Transformer

CNNS = ("resnet101", "tresnetl", "tresnetl_v2")
TRAINED_CNN_STAGES = ("layer2", "layer3", "layer4")  # their BackboneBase: the rest is frozen
SWIN_DROP_PATH, CVT_DROP_PATHS = 0.1, (0.0, 0.0, 0.3)
SMOKE = {"img_size": 64, "hidden_dim": 64, "dim_feedforward": 128}
# Keys a pretrained file may lack: recomputed buffers and BatchNorm's step counter.
MAY_LACK = ("num_batches_tracked", "relative_position_index", "attn_mask")
# What their backbone.py drops from each file before loading.
DROPPED = {"resnet101": ("fc.",), "tresnetl": ("head.fc",), "tresnetl_v2": ("head.fc",),
           "swin_L_384_22k": ("head",), "CvT_w24": ("head",)}


def sizes(recipe, smoke=False):
    """The model's sizes in their names: the recipe's, or the smoke run's small ones."""
    out = {k: recipe[k] for k in ("backbone", "img_size", "hidden_dim", "dim_feedforward", "enc_layers",
                                  "dec_layers", "nheads", "dropout", "num_class")}
    return {**out, **SMOKE} if smoke else out


def build_features(backbone, img_size, smoke=False):
    """The module at `backbone.0`, with their stochastic depth; tiny when `smoke`."""
    if backbone in CNNS:
        tiny = {"layers": [1, 1, 1, 1], "width": 0.125 if backbone.startswith("tresnet") else None} if smoke else {}
        return build_backbone(backbone, img_size, **tiny)
    if backbone == "swin_L_384_22k":
        if smoke:
            return SwinTransformer(img_size=img_size, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                                   window_size=2, drop_path_rate=SWIN_DROP_PATH)
        return build_swin_l_384(img_size, drop_path_rate=SWIN_DROP_PATH)
    if backbone == "CvT_w24":
        if smoke:
            return ConvolutionalVisionTransformer(dims=(16, 32, 64), depths=(1, 1, 2), num_heads=(1, 2, 2),
                                                  drop_path_rates=CVT_DROP_PATHS)
        return build_cvt_w24(img_size, drop_path_rates=CVT_DROP_PATHS)
    raise UserError(f"no training for backbone '{backbone}' (known: {', '.join(BACKBONE_STRIDES)})")


def build_model(recipe, smoke=False):
    """Query2Label with random weights (seed the global RNG first), the authors' keys and sizes."""
    s = sizes(recipe, smoke)
    features = build_features(s["backbone"], s["img_size"], smoke)
    transformer = Transformer(s["hidden_dim"], s["nheads"], s["enc_layers"], s["dec_layers"], s["dim_feedforward"],
                              s["dropout"])
    model = Query2Label(features, transformer, s["num_class"], s["img_size"], BACKBONE_STRIDES[s["backbone"]])
    model.arch = dict(backbone=s["backbone"], hidden_dim=s["hidden_dim"], dim_feedforward=s["dim_feedforward"],
                      enc_layers=s["enc_layers"], dec_layers=s["dec_layers"], nheads=s["nheads"],
                      num_class=s["num_class"], img_size=s["img_size"], pre_norm=False)
    return model


def frozen_model(recipe, smoke=False):
    """A fresh model with their frozen parts (random weights): what the memory planner measures."""
    model = build_model(recipe, smoke)
    freeze(model)
    return model


def backbone_module(model):
    """What the pretrained file loads into: the CNN inside its `body` holder, or the Swin / CvT itself."""
    return _loaded_part(model.backbone[0])


def _loaded_part(features):
    return features.body if isinstance(features, Backbone) else features


def expected_weights(backbone, img_size):
    """This backbone's state dict, built on the meta device: the names and shapes a pretrained file
    must hold, with no memory and no random draws (the seeded build comes after)."""
    with torch.device("meta"):
        return _loaded_part(build_features(backbone, img_size)).state_dict()


def freeze(model):
    """Their frozen parameters: outside layer2-4 of a CNN backbone; none for Swin / CvT. Returns their names."""
    if not isinstance(model.backbone[0], Backbone):
        return []
    frozen = []
    for name, p in backbone_module(model).named_parameters():
        if not any(stage in name for stage in TRAINED_CNN_STAGES):
            p.requires_grad_(False)
            frozen.append(f"backbone.0.body.{name}")
    return frozen


def read_pretrained(path, backbone, expected, source):
    """The weights of `path` that their backbone.py loads (head dropped), checked against `expected`
    (this backbone's state dict): a file that lacks some, or holds them in other shapes (another
    model's file), is one line naming it."""
    state = find_state_dict(read_pickle(path))
    state = {k: v for k, v in state.items() if not any(k.startswith(d) or (d == "head" and d in k)
                                                       for d in DROPPED[backbone])}
    missing = [k for k in expected if k not in state and not k.endswith(MAY_LACK)]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or wrong:
        first = (missing or wrong)[0]
        raise UserError(f"{path} is not a pretrained {backbone} file: {len(missing)} of its {len(expected)} weights "
                        f"missing, {len(wrong)} of another shape (e.g. {first}); a file of another model? pass "
                        f"{source}")
    return state


def load_pretrained(model, backbone, path, source, state=None):
    """Load a pretrained backbone file into `model` as their backbone.py does; returns what was left out.
    `state`: the file's weights as read_pretrained returned them (read here when None)."""
    ours = backbone_module(model).state_dict()
    if state is None:
        state = read_pretrained(path, backbone, ours, source)
    unexpected = sorted(k for k in state if k not in ours)
    kept = {k: v for k, v in state.items() if k in ours}
    with torch.no_grad():
        for k, v in kept.items():
            ours[k].copy_(v)
    return {"loaded": len(kept), "not_in_file": [k for k in ours if k not in state], "unused": unexpected[:20],
            "unused_count": len(unexpected)}
