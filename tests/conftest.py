import argparse
import atexit
import gc
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "helpers"))  # the shared builders (tests/helpers/*.py)

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core (pytest -n auto): one thread each, not a core's
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # share each, and the same for the processes tests start

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # No automatic garbage collection while torch, the libraries and the test modules load: each full one
    # walks every object loaded so far (~0.5 M by the end, ~1 s of collections in all), and all of it lives
    # to the end. Collection turns it back on, with all of it frozen (pytest_collection_finish).
    gc.disable()
    import torch  # not at the top: pytest's controller process loads this file too, and never needs torch

    torch.set_num_threads(1)

from harness.cli import configure_logging
from harness.data.smoke import make_smoke
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import read_yaml


@pytest.fixture(autouse=True)
def library_log_as_the_cli_shows_it():
    """The library's log lines on stdout/stderr as under `harness ...` (INFO shown), whatever test ran
    before in this process (main() installs the same handler; `-q` raises the level): tests read
    them with capsys."""
    configure_logging(argparse.Namespace(quiet=False, verbose=False, no_progress=False))


@pytest.fixture()
def no_lock_entries(tmp_path, monkeypatch):
    """Checkpoints are checked against this machine's lock file: a test reads an empty one, never the lock
    file of a checkout that has downloaded real releases (`pytestmark = pytest.mark.usefixtures(...)`)."""
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(tmp_path / "weights_manifest.lock.yaml"))


@pytest.fixture
def plots_not_drawn(monkeypatch):
    """The HTML report's plots laid out but not rendered to PNG (tight_layout and savefig: most of a
    report's time), for tests of its text, tables and which plots it holds; test_every_format_renders
    (tests/report/test_report.py) and the training curves test render them for real."""
    import harness.report.plots  # noqa: F401 (harness.report exports a function under the same name)

    monkeypatch.setattr(sys.modules["harness.report.plots"], "_png", lambda fig: b"\x89PNG not drawn")


@pytest.fixture
def coco(smoke_root, tmp_path):
    """The smoke images as an ordinary COCO folder (the smoke subset itself is never checked)."""
    root = tmp_path / "coco"
    shutil.copytree(smoke_root, root)
    (root / "SMOKE").unlink()
    return root


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """One smoke subset for the whole test session (24 val + 48 train images)."""
    return make_smoke(tmp_path_factory.mktemp("smoke"), n_val=24, n_train=48, seed=0)


# A Q2L-TResNet-L v2 with one block per backbone stage, an eighth of its width (256 channels, so
# hidden size 256), a tiny transformer and a 64 x 64 input: the authors' key names, file format and
# loading path in a file of a few MB (the full-size layout is tested in test_q2l_models.py).
SMALL_Q2L = dict(name="q2l", backbone="tresnetl_v2", hidden_dim=256, dim_feedforward=32, enc_layers=1,
                 dec_layers=2, nheads=4, num_classes=80, img_size=64, backbone_layers=[1, 1, 1, 1],
                 backbone_width=0.125)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """Synthetic MLSPL data (700 train / 300 val images, prepared) and features carrying its labels,
    shared by the MLSPL training, checks and report tests (none of them writes into it)."""
    from mlspl_data import synthetic_features, write_annotations

    from harness.mlspl.prepare import prepare

    base = tmp_path_factory.mktemp("mlspl")
    root = write_annotations(base / "coco", n_train=700, n_val=300, seed=5)
    prepare(root, base / "data")
    return base, synthetic_features(base / "data", base / "feats", noise=0.3)


@pytest.fixture(scope="session")
def smoke_data(smoke_root, tmp_path_factory):
    """The smoke subset prepared the MLSPL authors' way."""
    from harness.mlspl.prepare import prepare

    out = tmp_path_factory.mktemp("smoke_data")
    prepare(smoke_root, out)
    return out


def tiny_manifest(folder, model_id, arch, base="q2l-r101-448", **eval_overrides):
    """A manifest holding one entry: `base`'s paper and eval settings with a tiny architecture."""
    from harness.manifest import DEFAULT_MANIFEST

    data = read_yaml(DEFAULT_MANIFEST.read_text())
    entry = data["models"][base]
    entry["arch"] = arch
    entry["eval"].update(eval_overrides)
    data["models"] = {model_id: entry}
    path = folder / "manifest.yaml"
    path.write_text(dump_yaml(data))
    return path


# Tests that start processes (fresh interpreters, forked ranks) take the longest: start them first, so that with
# one pytest worker per core they do not run alone at the end. The first tests are handed out one a worker in
# turn: the bench and registry checks, 2nd and 4th, land on the same worker and share one fresh interpreter
# (tests/helpers/after_torch.py).
STARTS_PROCESSES = ("test_torchrun.py::test_torchrun_", "test_bench.py::test_bench_runs_from_a_bare_checkout",
                    "test_mlspl_authors.py::test_linear_training", "test_registry.py::test_a_model_without",
                    "test_ctran_refusals.py::test_a_resume_on_another", "test_q2l_ddp.py::",
                    "test_mlspl_loader.py::test_shared_loader_batches", "test_q2l_resume.py::",
                    "test_mlspl_ddp.py::", "test_ctran_ddp.py::")


# The longest in-process tests (1-5 CPU s each, measured) go next, for the same reason: a worker that draws
# one last would otherwise finish alone.
LONGEST = ("test_q2l_authors_loop.py::", "test_verify.py::test_a_whole_split_run", "test_api.py::test_the_docstring",
           "test_curves_and_export.py::test_ctran_training", "test_progress.py::test_an_interrupted_reproduce",
           "test_ctran_model.py::test_logits_equal", "test_q2l_checkpointing.py::test_checkpointed_training_is_bit",
           "test_mldecoder_eval.py::test_the_smallest_released")


def pytest_collection_modifyitems(items):
    early = STARTS_PROCESSES + LONGEST

    def rank(item):
        return next((i for i, name in enumerate(early) if name in item.nodeid), len(early))

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_collection_finish(session):
    """What is alive once the tests are collected (torch and the other libraries, the test modules) lives
    to the end: frozen out of the garbage collector's sight, so each full collection (Python's automatic
    ones, the harness's own gc.collect() after an OOM, pytest's at its end) walks only what the tests
    create, not ~0.2 s of torch's objects each time."""
    gc.freeze()
    gc.enable()
    atexit.register(gc.unfreeze)  # collectable again at exit (extension types warn of instances still alive)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """In the controller of a run with workers, once they are starting (each loads torch first, ~2 s): the
    harness compiled and the test modules rewritten for pytest's assertions, each written once to its
    cache. Otherwise each worker compiles and rewrites every one of them on a first run (~2 s each). The
    test modules go last first: a worker that catches up rewrites only the modules the controller had not
    reached, from the other end. Nothing happens where the caches are already written."""
    config = session.config
    if not config.pluginmanager.hasplugin("dsession") or sys.dont_write_bytecode:
        return
    import compileall

    from _pytest.assertion import rewrite  # the functions pytest's import hook uses itself

    tests = Path(__file__).parent
    compileall.compile_dir(tests.parent / "harness", quiet=2)
    compileall.compile_dir(tests / "helpers", quiet=2)
    state = config.stash[rewrite.assertstate_key]
    for module in sorted(tests.rglob("test_*.py"), reverse=True):
        pyc = rewrite.get_cache_dir(module) / (module.name[:-3] + rewrite.PYC_TAIL)
        if not rewrite._read_pyc(module, pyc) and rewrite.try_makedirs(pyc.parent):
            source_hash, code = rewrite._rewrite_test(module, config)
            rewrite._write_pyc(state, code, source_hash, pyc)


_FROZEN_AT = [None, 0]  # the last test's module, and how many modules were loaded at the last freeze


def pytest_runtest_setup(item):
    """The same for what the tests so far left alive for good: the libraries a test imports late (matplotlib,
    pandas, scipy, mlflow), frozen before the next test, and the helpers' caches (parsed sources, built
    models), frozen before the next test module when there are many (each full collection would walk them
    again: ~0.3 s each after test_layout.py's parsed sources)."""
    loaded = len(sys.modules) != _FROZEN_AT[1]
    if loaded or (item.module is not _FROZEN_AT[0] and len(gc.get_objects()) > 20_000):  # a list, not a walk
        gc.collect()  # garbage now is collected first: only what is alive is frozen (the last module's
        gc.freeze()  # module-scoped fixtures are gone by now, this one's are not made yet)
        _FROZEN_AT[1] = len(sys.modules)
    _FROZEN_AT[0] = item.module


def pytest_unconfigure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        atexit.register(_worker_leaves_at_once)  # registered last, so it runs first


def _worker_leaves_at_once():
    """A worker has sent every result by now; tearing down the thousands of modules torch and torchvision
    import would take it 1-2 s more, and the whole run waits for its last worker to end. Unless a test left
    a process running (the normal exit ends those), the worker ends here."""
    if multiprocessing.active_children():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="session", autouse=True)
def resnet50_built_once_per_starting_state():
    """resnet50(weights=None) as the harness calls it, each starting state built once (resnet_cache.py)."""
    import torchvision
    from resnet_cache import cached

    import harness.mlspl.train
    import harness.models.mlspl

    patch = pytest.MonkeyPatch()
    resnet50 = cached(torchvision.models.resnet50)
    for module in (torchvision.models, harness.mlspl.train, harness.models.mlspl):
        patch.setattr(module, "resnet50", resnet50)
    yield
    patch.undo()
