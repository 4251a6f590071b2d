"""The package's shape, as docs/architecture.md promises it: imports at module level, lazy imports
only for what costs start-up time (each saying why), no print outside the CLI, no import cycle, and
the floors read commands -> systems -> shared machinery -> records/metrics."""
import ast
import functools

import after_torch
import pytest
from paths import REPO

PACKAGE = REPO / "harness"
# the costly ones, and the optional ones (inplace_abn; tensorboard for training curves; the export extras)
LAZY_LIBRARIES = {"torch", "torchvision", "matplotlib", "pycocotools", "gdown", "inplace_abn", "tqdm", "tensorboard",
                  "mlflow", "wandb"}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


@functools.cache
def _source(path):
    return path.read_text()


@functools.cache
def _tree(path):
    """Each module parsed once for all the checks here (none changes a tree)."""
    return ast.parse(_source(path))


@functools.cache
def _nodes(path):
    """Every node of the module, in ast.walk's order."""
    return tuple(ast.walk(_tree(path)))


def _function_imports(path):
    lines = _source(path).splitlines()
    for fn in _nodes(path):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    yield node.lineno, names, lines[node.lineno - 1]


def test_imports_inside_functions_are_only_the_costly_libraries_each_with_its_reason():
    found = []
    for path in _modules():
        for lineno, names, line in _function_imports(path):
            roots = {n.split(".")[0] for n in names}
            costly = roots <= LAZY_LIBRARIES or (path.name == "cli.py" and names == ["harness.distributed"])
            explained = "# lazy:" in line or (line.strip().startswith("import matplotlib.pyplot"))
            if not (costly and explained):
                found.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not found, "function-level imports without a start-up reason:\n" + "\n".join(found)


def test_only_the_cli_prints():
    found = [f"{p.relative_to(REPO)}:{n.lineno}" for p in _modules() if p.parent.name != "commands" and p.name != "cli.py"
             for n in _nodes(p)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
    assert not found, "library code logs (logging.getLogger(__name__)); print only in commands/ and cli.py: " + str(found)


def _harness_imports(path):
    for node in _nodes(path):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("harness"))


def test_the_library_never_imports_the_cli():
    upward = [(str(p.relative_to(REPO)), m) for p in _modules() if p.parent.name != "commands" and p.name not in
              ("cli.py", "__main__.py") for m in _harness_imports(p) if m.startswith(("harness.commands", "harness.cli"))]
    assert not upward


TORCH_FREE = ["harness.cli", "harness.commands.report", "harness.commands.metrics", "harness.commands.compare",
              "harness.commands.models", "harness.commands.data", "harness.commands.verify"]
# One interpreter for all of them (tests/helpers/after_torch.py's in_children): it loads harness.cli and
# libraries that never load torch, then forks a child per module that imports it and says whether torch came
# with it; each child sees exactly what a fresh interpreter importing the module would add (a base that loaded
# torch shows in every answer). The libraries are those the modules share (scipy.sparse, PIL, requests,
# tabulate): loaded once, not per child.
TORCH_FREE_BASE = "import numpy, pandas, PIL.Image, requests, scipy.sparse, tabulate, yaml, harness.cli"


@pytest.fixture(scope="module")
def torch_loaded_by():
    checks = {m: f"import importlib, sys\nimportlib.import_module({m!r})\nanswer = 'torch' in sys.modules"
              for m in TORCH_FREE}
    return after_torch.in_children(TORCH_FREE_BASE, checks)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_commands_that_need_no_model_start_without_torch(module, torch_loaded_by):
    assert after_torch.answer_of(torch_loaded_by[module], module) is False


def _module_name(path):
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _top_level_imports(path, modules=()):
    """The harness modules a module needs when it is imported (module level, not in functions):
    `from P import m` of a submodule m needs P.m (Python imports it even while P is half done),
    `from P import name` of anything else needs P itself."""
    names = set()
    for node in _tree(path).body:
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break
            if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("harness"):
                for alias in sub.names:
                    submodule = f"{sub.module}.{alias.name}"
                    names.add(submodule if submodule in modules else sub.module)
            elif isinstance(sub, ast.Import):
                names.update(a.name for a in sub.names if a.name.startswith("harness"))
    return names


def test_no_import_cycle():
    modules = {_module_name(p): p for p in _modules()}
    graph = {name: sorted(m for m in _top_level_imports(path, modules) if m in modules and m != name)
             for name, path in modules.items()}
    state, cycle = {}, []

    def visit(name, stack):
        state[name] = "open"
        for nxt in graph[name]:
            if state.get(nxt) == "open":
                cycle.extend(stack[stack.index(nxt):] + [nxt])
                return True
            if nxt not in state and visit(nxt, stack + [nxt]):
                return True
        state[name] = "done"
        return False

    assert not any(visit(name, [name]) for name in graph if name not in state), " -> ".join(cycle)


def test_the_cycle_check_finds_one(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from harness.b import x\nfrom harness import c\n")
    b.write_text("import harness.a\n")
    assert _top_level_imports(a, {"harness.c"}) == {"harness.b", "harness.c"} and _top_level_imports(b) == {"harness.a"}
