"""The typed surface (records/, eval/, metrics.py, api.py): every function says what it takes and
returns, as pyproject.toml's mypy override (disallow_untyped_defs, run by `make lint`) requires; this
checks it without mypy, so the promise holds in the test suite too."""
import ast

from paths import REPO

TYPED = ["harness/records", "harness/eval", "harness/metrics.py", "harness/api.py"]


def _untyped(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            named = a.posonlyargs + a.args + a.kwonlyargs + [x for x in (a.vararg, a.kwarg) if x]
            bare = [x.arg for k, x in enumerate(named) if x.annotation is None and not (k == 0 and x.arg in ("self", "cls"))]
            if bare or node.returns is None:
                yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}({', '.join(bare)})" + \
                    ("" if node.returns else " without a result type")


def test_every_function_of_the_typed_surface_annotates_its_arguments_and_result():
    files = [p for entry in TYPED for p in ([REPO / entry] if entry.endswith(".py") else sorted((REPO / entry).glob("*.py")))]
    assert len(files) > 10
    found = [line for path in files for line in _untyped(path)]
    assert not found, "untyped functions in the typed surface:\n" + "\n".join(found)
