"""The harness tried as a hostile user would: nothing lost or poisoned, one line (exit 2), never a traceback.

Each test names the numbered promise of docs/reliability.md it holds.
"""
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_manifest
from paths import REPO
from torch import nn

from harness import records
from harness.cli import main, os_error_line
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import get_spec, read_yaml
from harness.models import register_model


class Unseeded(nn.Module):
    """Random at construction and NOT seeded by itself: shows whether the harness seeds it."""

    def __init__(self, num_classes=80):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, num_classes)

    def forward(self, x):
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


@register_model
def hostile_net(num_classes=80, **_):
    return Unseeded(num_classes)


@pytest.fixture()
def manifest(tmp_path):
    return tiny_manifest(tmp_path, "tiny-q2l", {"name": "hostile_net", "num_classes": 80}, resolution=32, batch_size=4)


def _eval_cli(manifest, smoke_root, runs, *extra):
    return main(["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--out", str(runs),
                 "--workers", "0", "--no-progress", *extra])


def _one_line(err):
    """The one error line the harness printed on stderr (progress bars and notes aside)."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("harness ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def two_runs(smoke_root, tmp_path_factory):
    """(manifest, runs folder holding two random-weights evals): made once; a test that may
    change it works on its own copy."""
    folder = tmp_path_factory.mktemp("two-runs")
    manifest = tiny_manifest(folder, "tiny-q2l", {"name": "hostile_net", "num_classes": 80}, resolution=32,
                             batch_size=4)
    for _ in range(2):
        assert _eval_cli(manifest, smoke_root, folder / "runs", "--weights", "random") == 0
    return manifest, folder / "runs"


# ------------------------------------------------------------------ 1. a report never overwrites a result

@pytest.mark.usefixtures("plots_not_drawn")
def test_report_refuses_to_overwrite_a_record_or_scores_and_replaces_its_own(two_runs, tmp_path, capsys):
    manifest, runs = two_runs[0], tmp_path / "runs"
    shutil.copytree(two_runs[1], runs)  # finished random-weights evals, this test's own copy
    run_dir = next(runs.glob("tiny-q2l/*"))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    capsys.readouterr()
    for target, fmt in ((run_dir / "record.json", "json"), (run_dir / "scores.npy", "markdown"),
                        (run_dir / "labels.npy", "csv")):
        assert main(["report", "--runs", str(runs), "--manifest", str(manifest), "--format", fmt,
                     "--out", str(target)]) == 2
        assert "not a report" in _one_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    for fmt in ("json", "markdown", "csv", "latex", "html"):  # its own earlier report is replaced
        out = tmp_path / f"report.{fmt}"
        for _ in range(2):
            assert main(["report", "--runs", str(runs), "--manifest", str(manifest), "--format", fmt,
                         "--out", str(out)]) == 0
    mine = tmp_path / "tables"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")  # --format all checks every target before writing any
    assert main(["report", "--runs", str(runs), "--manifest", str(manifest), "--format", "all",
                 "--out", str(mine)]) == 2
    assert (mine / "report.md").read_text() == "my notes\n" and not (mine / "report.json").exists()


# ------------------------------------------------------------------ 2. the lock is never poisoned

class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _released_manifest(tmp_path):
    """The tiny model as an unpinned release (checkpoint and config), served only by --weights-dir."""
    path = tiny_manifest(tmp_path, "tiny-q2l", {"name": "hostile_net", "num_classes": 80}, resolution=32, batch_size=4)
    data = read_yaml(path.read_text())
    for f in data["models"]["tiny-q2l"]["files"].values():
        f["sha256"], f["sources"] = None, [{"type": "http", "url": "http://127.0.0.1:9/none"}]
    path.write_text(dump_yaml(data))
    return path


def test_a_refused_file_never_gets_its_hash_locked(smoke_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    manifest = _released_manifest(tmp_path)
    lock = tmp_path / "weights_manifest.lock.yaml"
    placed = tmp_path / "weights" / "tiny-q2l"
    placed.mkdir(parents=True)
    (placed / "config_new.json").write_text("{}")
    with open(placed / "checkpoint.pkl", "wb") as f:
        pickle.dump({"state_dict": _RunsCode()}, f, protocol=2)
    args = ["--weights-dir", str(tmp_path / "weights")]
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", *args) == 2
    assert "could run code: refused" in _one_line(capsys.readouterr().err)
    assert not lock.exists() or not (read_yaml(lock.read_text()) or {}).get("tiny-q2l")
    # a file of another model (strict keys fail) is not locked either
    torch.save({"state_dict": {"other.weight": torch.zeros(2)}}, placed / "checkpoint.pkl")
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", *args) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert not lock.exists() or not (read_yaml(lock.read_text()) or {}).get("tiny-q2l")
    # the real release then loads, and only now is its hash locked, beside the chosen manifest
    torch.save({"state_dict": Unseeded().state_dict()}, placed / "checkpoint.pkl")
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", *args) == 0
    locked = read_yaml(lock.read_text())["tiny-q2l"]
    assert locked["checkpoint"]["sha256"] == hashlib.sha256((placed / "checkpoint.pkl").read_bytes()).hexdigest()
    assert set(locked) == {"checkpoint", "config"}


def test_the_default_manifest_is_the_one_of_the_folder_the_command_runs_in(tmp_path, monkeypatch):
    from harness.download.settings import lock_file_for

    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / "weights_manifest.yaml").write_text((tiny_manifest(tmp_path, "tiny-q2l", {"name": "hostile_net"})
                                                  ).read_text())
    monkeypatch.chdir(clone)
    spec = get_spec("tiny-q2l")  # only this clone's manifest has it
    assert spec.manifest_path == (clone / "weights_manifest.yaml").resolve()
    assert lock_file_for(spec.manifest_path) == (clone / "weights_manifest.lock.yaml").resolve()


# ------------------------------------------------------------------ 3. random weights are seeded, resume is checked

def test_random_weights_are_seeded_and_a_resume_refuses_another_seed(manifest, smoke_root, tmp_path, capsys):
    spec = get_spec("tiny-q2l", manifest)

    def scores(seed, runs):
        run = evaluate(spec, EvalConfig(coco_root=smoke_root, weights="random", runs_root=runs, workers=0,
                                        progress=False, seed=seed)).run_dir
        return np.load(run / "scores.npy"), json.loads((run / "record.json").read_text())

    a, record = scores(0, tmp_path / "a")
    b, _ = scores(0, tmp_path / "b")
    c, _ = scores(1, tmp_path / "c")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert record["checkpoint"]["seed"] == 0
    # an interrupted seed-0 run (its settings, no record): resuming it with seed 1 would continue another model
    run_dir = records.new_run_dir(tmp_path / "d", "tiny-q2l")
    (run_dir / "settings.json").write_text(next((tmp_path / "a").glob("tiny-q2l/*/settings.json")).read_text())
    capsys.readouterr()
    assert _eval_cli(manifest, smoke_root, tmp_path / "d", "--weights", "random", "--seed", "1",
                     "--resume", str(run_dir)) == 2
    assert "seed" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("text", ["{ not json", "[1, 2]", '"batch_size"', ""])
def test_a_damaged_settings_file_on_resume_is_one_line_and_kept(manifest, smoke_root, tmp_path, capsys, text):
    run_dir = records.new_run_dir(tmp_path / "runs", "tiny-q2l")
    (run_dir / "settings.json").write_text(text)
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", "--weights", "random", "--resume", str(run_dir)) == 2
    assert f"{run_dir / 'settings.json'} is damaged" in _one_line(capsys.readouterr().err)
    assert (run_dir / "settings.json").read_text() == text and not records.is_finished(run_dir)


def test_a_resume_names_every_setting_changed_or_missing(manifest, smoke_root, tmp_path, capsys):
    assert _eval_cli(manifest, smoke_root, tmp_path / "a", "--weights", "random") == 0
    saved = json.loads(next((tmp_path / "a").glob("tiny-q2l/*/settings.json")).read_text())
    run_dir = records.new_run_dir(tmp_path / "runs", "tiny-q2l")
    del saved["resolution"]
    (run_dir / "settings.json").write_text(json.dumps({**saved, "batch_size": str(saved["batch_size"])}))
    capsys.readouterr()
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", "--weights", "random", "--seed", "3",
                     "--resume", str(run_dir)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "batch_size, resolution, seed differ" in line


@pytest.mark.parametrize("seed", [2**64, -2**63 - 1, 10**30])
def test_a_seed_torch_cannot_take_is_one_line_before_any_model(manifest, smoke_root, tmp_path, capsys, monkeypatch, seed):
    monkeypatch.setattr("harness.eval.run._build_model", lambda *a: pytest.fail("model built"))
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", "--weights", "random", "--seed", str(seed)) == 2
    assert f"--seed {seed}" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------------ 4. one process at a time on a run

def _cli_in_a_second_process(argv):
    """(exit code, stderr) of the CLI run in a forked process: a second pid, started from this
    process's imports instead of loading torch again."""
    context = multiprocessing.get_context("fork")
    result = context.SimpleQueue()

    def child():
        sys.stderr = io.StringIO()
        code = main(argv)
        result.put((code, sys.stderr.getvalue()))

    process = context.Process(target=child)
    process.start()
    process.join(120)
    assert process.exitcode == 0 and not result.empty(), f"the second process crashed (exit {process.exitcode})"
    return result.get()


def test_a_second_process_on_a_run_in_progress_is_refused(manifest, smoke_root, tmp_path):
    run_dir = records.new_run_dir(tmp_path / "runs", "tiny-q2l")
    held = records.hold_run(run_dir)
    try:
        (run_dir / "settings.json").write_text("{}")
        code, err = _cli_in_a_second_process(["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root",
                                              str(smoke_root), "--weights", "random", "--workers", "0",
                                              "--no-progress", "--resume", str(run_dir)])
    finally:
        held.close()
    assert code == 2, err
    assert f"is in progress (pid {os.getpid()})" in _one_line(err)


# ------------------------------------------------------------------ 5. an image that cannot be decoded

def test_a_truncated_image_is_one_line_naming_it_and_the_run_resumes(manifest, smoke_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(smoke_root, root)
    names = sorted((root / "val2014").iterdir())
    original = names[5].read_bytes()
    names[5].write_bytes(original[:200])  # truncated
    names[9].write_bytes(b"")  # empty
    assert _eval_cli(manifest, root, tmp_path / "runs", "--weights", "random") == 2
    line = _one_line(capsys.readouterr().err)
    assert names[5].name in line and "COCO id" in line and "--resume" in line and "--download" in line
    assert main(["data", "coco", "--root", str(root), "--verify-images"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "2 val2014 image(s) cannot be decoded" in line and names[5].name in line and names[9].name in line
    names[5].write_bytes(original)
    names[9].write_bytes(original)
    assert _eval_cli(manifest, root, tmp_path / "runs", "--weights", "random", "--resume") == 0


# ------------------------------------------------------------------ 6. annotation files that are not COCO

@pytest.mark.parametrize("content, problem", [
    ('{"hello": 1}', "no images or annotations or categories list"),
    ('[1, 2]', "a JSON list"),
    ("not json", "not JSON"),
    (None, "category id 999"),
])
def test_a_bad_annotation_file_is_one_line_before_any_model(manifest, smoke_root, tmp_path, capsys, content, problem):
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(smoke_root, root)
    ann = root / "annotations" / "instances_val2014.json"
    if content is None:
        data = json.loads(ann.read_text())
        data["annotations"][0]["category_id"] = 999
        content = json.dumps(data)
    ann.write_text(content)
    for args in (["data", "coco", "--root", str(root)],
                 ["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(root), "--weights", "random",
                  "--out", str(tmp_path / "runs")]):
        assert main(args) == 2
        assert problem in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()  # no half-written run folder


# ------------------------------------------------------------------ 7. NaN weights refused at load

def test_non_finite_weights_are_refused_when_loaded(manifest, smoke_root, tmp_path, capsys):
    state = Unseeded().state_dict()
    state["fc.bias"][3] = float("nan")
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", "--weights", str(tmp_path / "bad.pth")) == 2
    line = _one_line(capsys.readouterr().err)
    assert "NaN or inf" in line and "fc.bias" in line and "harness download tiny-q2l" in line
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ 8. damaged records are skipped, not fatal

@pytest.mark.parametrize("damage", [
    lambda r: r["metrics"].update(mAP="high"),
    lambda r: r.update(metrics=[1, 2]),
    lambda r: r["metrics"].update(mAP_ci95=[1]),
    lambda r: r.update(measurement="fast"),
])
def test_report_skips_a_damaged_record_with_one_line(two_runs, tmp_path, capsys, damage):
    manifest, runs = two_runs[0], tmp_path / "runs"
    shutil.copytree(two_runs[1], runs)
    first, second = sorted(runs.glob("tiny-q2l/*/record.json"))
    record = json.loads(first.read_text())
    damage(record)
    first.write_text(json.dumps(record))
    folder = runs / "tiny-q2l" / "zz-folder" / "record.json"
    folder.mkdir(parents=True)  # a record path that is a folder
    capsys.readouterr()
    assert main(["report", "--runs", str(runs), "--manifest", str(manifest), "--format", "markdown"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"skipping {first.parent}" in captured.err and f"skipping {folder.parent}" in captured.err
    assert second.parent.name in captured.out or "tiny-q2l" in captured.out  # the sound record is reported


# ------------------------------------------------------------------ 9. inputs checked before any model is built

@pytest.mark.usefixtures("plots_not_drawn")
def test_reproduce_offline_without_checkpoints_builds_nothing(smoke_root, tmp_path, monkeypatch, capsys):
    from authors_checkpoints import small_q2l_manifest

    built = []
    monkeypatch.setattr("harness.eval.reproduce.estimate_cpu_hours", lambda *a: built.append(a) or 1.0)
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    code = main(["reproduce", "q2l", "--coco-root", str(smoke_root), "--manifest", str(small_q2l_manifest(tmp_path)),
                 "--out", str(tmp_path / "runs"), "--report-dir", str(tmp_path / "tables")])
    assert code == 1 and built == []  # no estimate (no model build) for a model that cannot run
    assert "offline" in capsys.readouterr().out


def test_out_that_is_a_file_is_refused_before_the_model_is_built(manifest, smoke_root, tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr("harness.eval.run._build_model", lambda *a: pytest.fail("model built"))
    assert _eval_cli(manifest, smoke_root, tmp_path / "afile", "--weights", "random") == 2
    assert "is a file, not a folder" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------------ 10. model ids: closest and the authors' names

def test_unknown_model_suggests_the_closest_and_authors_folder_names_work(capsys):
    assert main(["eval", "q2l-r101-488", "--coco-root", "x"]) == 2
    assert "did you mean 'q2l-r101-448'?" in _one_line(capsys.readouterr().err)
    assert get_spec("Q2L-R101-448").id == "q2l-r101-448" and get_spec("q2l-tresl-448".upper()).id == "q2l-tresl-448"


# ------------------------------------------------------------------ 11. an OSError names its real cause

def test_os_errors_name_the_real_cause(tmp_path):
    (tmp_path / "f").write_text("x")
    for make, cause in ((lambda: open(tmp_path / "f" / "x"), "is a file, not a folder"),
                        (lambda: os.mkdir(tmp_path / "f"), "already exists"),
                        (lambda: open(tmp_path / "missing" / "x"), "no such file or folder")):
        with pytest.raises(OSError) as err:
            make()
        line = os_error_line(err.value)
        assert cause in line and str(tmp_path) in line and "network" not in line


# ------------------------------------------------------------------ 12. an estimate outside its CI is said

def test_a_map_outside_its_interval_is_said_on_the_console_and_equality_is_tolerant():
    from harness.metrics import outside_ci

    assert not outside_ci(37.5, [37.5 + 1e-12, 37.5 + 2e-12]) and outside_ci(11.81, [12.56, 19.80])
    assert not outside_ci(None, [1, 2]) and not outside_ci(5.0, None)


@pytest.mark.usefixtures("plots_not_drawn")
def test_the_console_line_says_when_map_is_outside_its_ci(manifest, smoke_root, tmp_path, capsys, monkeypatch):
    import harness.metrics

    real = harness.metrics.compute_metrics

    def shifted(*a, **kw):
        m = real(*a, **kw)
        m["mAP_ci95"] = [m["mAP"] + 1, m["mAP"] + 2]
        return m
    monkeypatch.setattr(harness.metrics, "compute_metrics", shifted)
    assert _eval_cli(manifest, smoke_root, tmp_path / "runs", "--weights", "random") == 0
    assert "mAP lies outside its bootstrap interval" in capsys.readouterr().out
    assert main(["report", "--runs", str(tmp_path / "runs"), "--manifest", str(manifest), "--format", "html",
                 "--out", str(tmp_path / "r.html")]) == 0  # no negative error bar


# ------------------------------------------------------------------ 13. smoke unmistakable in HTML

@pytest.mark.usefixtures("plots_not_drawn")
def test_html_report_flags_smoke_rows_and_leaves_out_an_empty_plot(two_runs, tmp_path):
    manifest, runs = two_runs  # read only: the report is written outside it
    assert main(["report", "--runs", str(runs), "--manifest", str(manifest), "--format", "html",
                 "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "class='banner'" in html and '<tr class="smoke">' in html
    assert 'alt="vram_vs_speed"' not in html and 'alt="paper_vs_ours"' in html


# ------------------------------------------------------------------ 15. progress on long steps

def test_mlspl_progress_says_epoch_n_of_total_and_eta(capsys):
    from harness.mlspl.run import _say

    progress = _say(True, 25)
    progress(0, [10.0])
    progress(1, [11.0])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("  epoch 1/25:") and out[1].startswith("  epoch 2/25:") and "ETA" in out[1]


# ------------------------------------------------------------------ 16. rendered reports are not left untracked

def test_rendered_reports_are_ignored_by_git():
    root = str(REPO)
    if not os.path.isdir(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    for name in ("tables/report.md", "tables/report.html", "tables/report-cost.csv"):
        assert subprocess.run(["git", "check-ignore", "-q", name], cwd=root).returncode == 0, name
