"""Reproducibility harness for multi-label image classification (Query2Label, ASL, ML-Decoder,
MLSPL, C-Tran): the published numbers, checked on your machine.

    import harness
    model = harness.create_model("q2l-r101-448")          # the authors' weights, verified
    metrics = harness.compute_metrics(scores, labels, "q2l")
    runs = harness.read_runs("runs")                       # a pandas DataFrame

The names below load on first use (a module __getattr__, as lm-eval's): `import harness` and
`harness --help` stay fast, and torch is imported only by what needs it. docs/python-api.md.
"""
import importlib

try:
    from harness._version import __version__  # written from git by setuptools-scm at install time
except ImportError:  # a source tree never installed: nothing wrote it
    __version__ = "0+unknown"

# public name -> the module that defines it
_API = {
    "create_model": "harness.api", "eval_transform": "harness.api", "evaluate": "harness.api",
    "compute_metrics": "harness.api", "compare": "harness.api", "read_runs": "harness.api",
    "list_models": "harness.api", "UserError": "harness.errors",
}
__all__ = [*_API, "__version__"]


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_API})
