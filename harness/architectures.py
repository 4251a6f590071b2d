"""The keywords each architecture's builder takes, as a manifest's `arch` may give them: checked when
the manifest is read, before any model is built (a misspelt `img_sise` would otherwise reach the
builder as a TypeError, a `num_classes: 3` would score 80 labels with 3 outputs, a huge `img_size`
would try to allocate it). The builders live in harness.models; tests/download/test_manifest_checks.py
checks this table against their signatures."""
import math

from harness.data.categories import COCO_CATEGORIES

NUM_CLASSES = len(COCO_CATEGORIES)  # every protocol scores the 80 COCO 2014 categories
MIN_RESOLUTION, MAX_RESOLUTION = 32, 2048  # one stride-32 cell; 3.2x the largest paper resolution (640)


def _count(low, high):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            return f"must be a whole number from {low} to {high:,}"
        return None
    return check


def _choice(*names):
    def check(value):
        return None if value in names else f"must be one of {', '.join(names)}"
    return check


def _boolean(value):
    return None if isinstance(value, bool) else "must be true or false"


def _text(value):
    return None if isinstance(value, str) and value.strip() else "must be a non-empty text"


def _fraction(value):  # a dropout probability
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 <= value < 1):
        return "must be a number from 0 up to (not including) 1"
    return None


def _width(value):  # a TResNet width factor (1.0, 1.2, 1.3; tests shrink it)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 < value <= 4):
        return "must be a number above 0 and at most 4"
    return None


def _blocks(value):  # blocks per ResNet/TResNet stage
    if (not isinstance(value, list) or len(value) != 4
            or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64 for n in value)):
        return "must be a list of 4 whole numbers from 1 to 64 (blocks per stage)"
    return None


def _classes(value):
    if isinstance(value, bool) or not isinstance(value, int) or value != NUM_CLASSES:
        return f"must be {NUM_CLASSES}: every protocol scores the {NUM_CLASSES} COCO 2014 categories"
    return None


def _groups(value):  # ML-Decoder's query groups: -1 (one per class) or 1..80
    if isinstance(value, bool) or not isinstance(value, int) or not (value == -1 or 1 <= value <= NUM_CLASSES):
        return f"must be -1 (one group per class) or a whole number from 1 to {NUM_CLASSES}"
    return None


def _resolution(value):
    return _count(MIN_RESOLUTION, MAX_RESOLUTION)(value)


_TRESNET_SIZES = {"layers": _blocks, "width_factor": _width}  # only tests shrink a TResNet
_DIM = _count(1, 65536)
_LAYERS = _count(0, 64)

# name -> ({keyword: check}, the keywords required)
ARCHITECTURES = {
    "q2l": ({"backbone": _choice("resnet101", "tresnetl", "tresnetl_v2", "swin_L_384_22k", "CvT_w24"),
             "hidden_dim": _DIM, "dim_feedforward": _DIM, "enc_layers": _LAYERS, "dec_layers": _count(1, 64),
             "nheads": _count(1, 1024), "num_classes": _classes, "img_size": _resolution, "release_folder": _text,
             "dropout": _fraction, "pre_norm": _boolean, "backbone_layers": _blocks, "backbone_width": _width},
            {"backbone", "hidden_dim", "dim_feedforward", "enc_layers", "dec_layers", "nheads", "num_classes",
             "img_size"}),
    "asl_tresnet_m": ({"num_classes": _classes, "img_size": _resolution, **_TRESNET_SIZES}, {"num_classes"}),
    "asl_tresnet_l": ({"num_classes": _classes, "img_size": _resolution, **_TRESNET_SIZES}, {"num_classes"}),
    "asl_tresnet_xl": ({"num_classes": _classes, "img_size": _resolution, **_TRESNET_SIZES}, {"num_classes"}),
    "ml_decoder": ({"model_name": _choice("tresnet_m", "tresnet_l", "tresnet_xl"), "num_classes": _classes,
                    "img_size": _resolution, "num_of_groups": _groups,
                    "decoder_embedding": _DIM, **_TRESNET_SIZES},
                   {"model_name", "num_classes", "img_size"}),
    "mlspl_resnet50": ({"num_classes": _classes, "linear_only": _boolean, "layers": _blocks}, set()),
    "ctran": ({"num_labels": _classes, "use_lmt": _boolean, "layers": _count(1, 64), "heads": _count(1, 1024),
               "dropout": _fraction, "blocks": _blocks, "block": _choice("bottleneck", "basic"),
               "img_size": _resolution}, set()),
}
CTRAN_WIDTH = 2048  # C-Tran's transformer width (its ResNet-101 features), which `heads` must divide


def arch_problems(arch):
    """[(keyword, what is wrong)] of a known architecture's `arch` mapping; [] for an unknown name
    (a builder registered at run time, tests' tiny networks: checked against its signature then)."""
    known = ARCHITECTURES.get(arch.get("name"))
    if known is None:
        return []
    checks = known[0]  # a missing required keyword is named when the model is built (harness.models)
    problems = []
    for key, value in arch.items():
        if key == "name":
            continue
        if key not in checks:
            problems.append((key, f"is not a keyword of {arch['name']}"))
            continue
        why = checks[key](value)
        if why:
            problems.append((key, f"{why} (got {value!r:.60})"))
    if problems:
        return problems
    if arch["name"] == "q2l" and arch.get("hidden_dim", 1) % arch.get("nheads", 1):
        problems.append(("nheads", f"must divide hidden_dim {arch['hidden_dim']} (got {arch['nheads']})"))
    if arch["name"] == "ctran" and CTRAN_WIDTH % arch.get("heads", 4):
        problems.append(("heads", f"must divide C-Tran's width {CTRAN_WIDTH} (got {arch['heads']})"))
    return problems


def keywords(name):
    """The keywords a known architecture takes (for a hint), else ()."""
    return tuple(ARCHITECTURES[name][0]) if name in ARCHITECTURES else ()
