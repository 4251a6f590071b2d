"""Model registry: builders register by architecture name; models are created by manifest id.

`create_model("q2l-r101-448")` reads the entry's `arch` from weights_manifest.yaml and calls
the builder registered under `arch["name"]` with the remaining fields as keyword arguments.
Nothing here knows of files or downloads: released weights are loaded by harness.pretrained.
"""
import difflib
import importlib
import inspect

from harness.errors import UserError
from harness.manifest import get_spec

_BUILDERS = {}
# Architecture name -> the module whose import registers its builder. Only the one a model needs is
# imported, on first use: `harness --help` stays fast, and a model that needs no torchvision never
# pays for its import (about a second a process: it loads torch._dynamo).
BUILDER_MODULES = {"q2l": "harness.models.q2l", "asl_tresnet_m": "harness.models.asl",
                   "asl_tresnet_l": "harness.models.asl", "asl_tresnet_xl": "harness.models.asl",
                   "ml_decoder": "harness.models.ml_decoder", "mlspl_resnet50": "harness.models.mlspl",
                   "ctran": "harness.models.ctran"}


def register_model(fn):
    """Decorator: register `fn` as the builder for the architecture named like the function."""
    _BUILDERS[fn.__name__] = fn
    return fn


def registered_architectures():
    """Every builder's name, each builder module imported."""
    for module in set(BUILDER_MODULES.values()):
        importlib.import_module(module)
    return sorted(_BUILDERS)


def build_from_arch(arch, **overrides):
    """Build a model from an `arch` mapping (manifest format) with random weights."""
    if arch["name"] not in _BUILDERS and arch["name"] in BUILDER_MODULES:
        importlib.import_module(BUILDER_MODULES[arch["name"]])
    params = {k: v for k, v in arch.items() if k != "name"}
    params.update(overrides)
    if arch["name"] not in _BUILDERS:
        known = ", ".join(registered_architectures())
        close = difflib.get_close_matches(str(arch["name"]), known.split(", "), n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"no builder for architecture '{arch['name']}'; {hint}(known: {known}); "
                        f"fix the manifest entry's arch.name")
    builder = _BUILDERS[arch["name"]]
    _check_keywords(arch["name"], builder, params)
    return builder(**params)


def _check_keywords(name, builder, params):
    """A keyword the builder does not take (or one it needs and lacks) is one line, before building."""
    try:
        inspect.signature(builder).bind(**params)
    except TypeError as e:
        takes = [p for p in inspect.signature(builder).parameters if p not in ("sizes", "kwargs")]
        raise UserError(f"architecture '{name}': {e}; its keywords are {', '.join(takes)}: fix the manifest "
                        f"entry's arch") from None


def create_model(name, manifest=None, **overrides):
    """Build manifest model `name` with random weights (harness.pretrained loads released ones)."""
    return build_from_arch(get_spec(name, manifest).arch, **overrides)
