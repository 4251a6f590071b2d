"""Model registry: builders register by architecture name; models are created by manifest id.

`create_model("q2l-r101-448")` reads the entry's `arch` from weights_manifest.yaml and calls
the builder registered under `arch["name"]` with the remaining fields as keyword arguments.
Nothing here downloads anything: weights are loaded by harness.checkpoints.
"""
import importlib

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
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency, not a module not written yet
                raise


def list_architectures():
    _load_builders()
    return sorted(_BUILDERS)


def build_from_arch(arch, **overrides):
    """Build a model from an `arch` mapping (manifest format) with random weights."""
    _load_builders()
    params = {k: v for k, v in arch.items() if k != "name"}
    params.update(overrides)
    if arch["name"] not in _BUILDERS:
        raise KeyError(f"no builder registered for architecture '{arch['name']}'")
    return _BUILDERS[arch["name"]](**params)


def create_model(name, pretrained=False, manifest=None, load_options=None, **overrides):
    """Build manifest model `name`; with pretrained=True load its verified released weights.

    load_options go to harness.checkpoints.build_pretrained (cache_dir, weights_dir, trust);
    what it reports (sha256, epoch, ...) is kept as `model.checkpoint_info`.
    """
    from harness.manifest import get_spec

    spec = get_spec(name, manifest)
    if not pretrained:
        return build_from_arch(spec.arch, **overrides)
    from harness.checkpoints import build_pretrained

    model, info = build_pretrained(spec, **(load_options or {}), **overrides)
    model.checkpoint_info = info
    return model
