"""The Python face (harness/__init__.py, harness/api.py): lazy, documented, the same as the CLI."""
import doctest
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL_Q2L, tiny_manifest
from paths import REPO

import harness
import harness.api
from harness.cli import main
from harness.errors import UserError


def test_the_docstring_examples_run(tmp_path):
    failed, tried = doctest.testmod(harness.api, extraglobs={"harness": harness, "np": np, "torch": torch,
                                                             "tmp_path": tmp_path}, report=True)
    assert tried >= 6 and failed == 0


# After `import harness`, whether torch and harness.api came with it; then whether asking for a name
# imports harness.api: the import is stopped as it starts (loading torch would cost the child ~2.5 s).
LAZY_IMPORT = """
import sys, harness
print('torch' in sys.modules, 'harness.api' in sys.modules)
class Asked(Exception):
    pass
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == 'harness.api':
            raise Asked
sys.meta_path.insert(0, Watch())
try:
    harness.compute_metrics
except Asked:
    print(True)
"""


def test_import_loads_nothing_heavy_until_asked():
    code = LAZY_IMPORT
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.split() == ["False", "False", "True"]
    assert set(harness.__all__) <= set(dir(harness))


def test_user_error_is_a_value_error():
    with pytest.raises(ValueError, match="did you mean 'q2l-r101-448'"):
        harness.create_model("q2l-r101-44", pretrained=False)
    assert issubclass(harness.UserError, ValueError) and harness.UserError is UserError


@pytest.fixture
def small(tmp_path):
    """A manifest of one small Query2Label (the real architecture, a 64-pixel input)."""
    return tiny_manifest(tmp_path, "small-q2l", SMALL_Q2L, resolution=64)


def test_api_scores_equal_harness_eval_bit_for_bit(small, smoke_root, tmp_path):
    """The same model and settings through the API and the CLI: the same scores, bit for bit."""
    settings = ["--weights", "random", "--limit", "3", "--workers", "0", "--no-progress", "--batch-size", "2"]
    assert main(["eval", "small-q2l", "--manifest", str(small), "--coco-root", str(smoke_root), "--runs",
                 str(tmp_path / "cli"), *settings]) == 0
    [record] = harness.evaluate("small-q2l", smoke_root, manifest=str(small), weights="random", limit=3, workers=0,
                                progress=False, batch_size=2, runs_root=str(tmp_path / "api"))
    [cli_dir] = (tmp_path / "cli" / "small-q2l").iterdir()
    assert np.array_equal(np.load(cli_dir / "scores.npy"), np.load(f"{record['run_dir']}/scores.npy"))
    assert record["kind"] == "eval" and record["smoke"] is True

    table = harness.read_runs(tmp_path / "api")
    assert isinstance(table, pd.DataFrame) and len(table) == 1
    row = table.iloc[0]
    assert row["model"] == "small-q2l" and row["mAP"] == record["metrics"]["mAP"] and bool(row["smoke"])
    assert row["n_images"] == 3 and row["resolution"] == 64 and row["run_dir"] == record["run_dir"]


def test_create_model_attaches_its_spec_transform_and_where_the_weights_came_from():
    # on the meta device: what is attached does not depend on the weights' values, and the full-size
    # network's random weights cost ~0.5 s (the docstring example builds a model on the CPU for real)
    with torch.device("meta"):
        model = harness.create_model("asl-tresnetl-448", pretrained=False, device="meta")
    assert model.spec.id == "asl-tresnetl-448" and not model.training
    assert model.weights_info["random_weights"] and model.transform is not None


def test_compare_is_the_command_as_a_dict(small, smoke_root, tmp_path):
    for seed in (0, 1):
        assert main(["eval", "small-q2l", "--manifest", str(small), "--coco-root", str(smoke_root), "--runs",
                     str(tmp_path / f"r{seed}"), "--weights", "random", "--seed", str(seed), "--limit", "4",
                     "--workers", "0", "--no-progress"]) == 0
    a, b = (next((tmp_path / f"r{s}" / "small-q2l").iterdir()) for s in (0, 1))
    result = harness.compare(a, b, n_boot=20, n_perm=20)
    assert result["n_images"] == 4 and result["verdict"] and 0 <= result["p_value"] <= 1


def test_evaluate_on_a_rank_other_than_0_returns_no_records(small, monkeypatch):
    """Under torchrun only rank 0 writes a record: the other ranks get an empty list, not a crash."""
    from harness.records.store import FinishedRun

    monkeypatch.setattr(harness.api, "evaluate_many", lambda specs, config: iter([FinishedRun(config.runs_root, None)]))
    assert harness.evaluate("small-q2l", "unused", manifest=str(small)) == []
