"""Model registry: builders register by architecture name; models are created by manifest id.

`create_model("q2l-r101-448")` reads the entry's `arch` from weights_manifest.yaml and calls
the builder registered under `arch["name"]` with the remaining fields as keyword arguments.
Nothing here knows of files or downloads: released weights are loaded by harness.pretrained.
"""
import importlib

from harness.errors import UserError

_BUILDERS = {}
# Modules whose import registers builders; imported on first use so `harness --help` stays fast.
_BUILDER_MODULES = ("harness.models.q2l", "harness.models.asl", "harness.models.ml_decoder", "harness.models.mlspl",
                    "harness.models.ctran")


def register_model(fn):
    """Decorator: register `fn` as the builder for the architecture named like the function."""
    _BUILDERS[fn.__name__] = fn
    return fn


def _load_builders():
    for name in _BUILDER_MODULES:
        importlib.import_module(name)


def build_from_arch(arch, **overrides):
    """Build a model from an `arch` mapping (manifest format) with random weights."""
    if arch["name"] not in _BUILDERS:  # the builder modules (and torchvision) load on first need
        _load_builders()
    params = {k: v for k, v in arch.items() if k != "name"}
    params.update(overrides)
    if arch["name"] not in _BUILDERS:
        raise UserError(f"no builder for architecture '{arch['name']}' (known: {', '.join(sorted(_BUILDERS))}); "
                        f"fix the manifest entry's arch.name")
    return _BUILDERS[arch["name"]](**params)


def create_model(name, manifest=None, **overrides):
    """Build manifest model `name` with random weights (harness.pretrained loads released ones)."""
    from harness.manifest import get_spec

    return build_from_arch(get_spec(name, manifest).arch, **overrides)
