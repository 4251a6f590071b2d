"""harness eval end to end on the smoke subset, with a tiny registered model (fast on CPU)."""
import json

import numpy as np
import pytest
import torch
from conftest import tiny_manifest
from eval_runs import eval_run, frozen_scores
from torch import nn

import harness.eval.run
import harness.records
from harness.cli import main
from harness.data.coco import load_labels
from harness.errors import UserError
from harness.eval.config import EvalConfig
from harness.eval.run import _non_finite_message, _smoke_reasons, evaluate
from harness.manifest import get_spec
from harness.models import register_model


class TinyNet(nn.Module):
    """Pools colour statistics: deterministic given its seed, and it can be told to fail mid-run."""

    fail_after = None  # number of forward calls after which to raise (simulates an interruption)
    nan_after = None  # number of forward calls after which to return NaN (simulates an fp16 overflow)
    forward_calls = 0  # over every instance: tells whether a resume ran the model at all

    def __init__(self, num_classes=80):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        TinyNet.forward_calls += 1
        if TinyNet.fail_after is not None and self.calls > TinyNet.fail_after:
            raise KeyboardInterrupt
        logits = self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))
        if TinyNet.nan_after is not None and self.calls > TinyNet.nan_after:
            logits[1:2] = float("nan")  # one bad image in the batch is enough
        return logits


@register_model
def tiny_eval_net(num_classes=80, **_):
    return TinyNet(num_classes)


def _manifest(folder):
    return tiny_manifest(folder, "tiny-q2l", {"name": "tiny_eval_net", "num_classes": 80}, resolution=32, batch_size=4)


@pytest.fixture()
def manifest(tmp_path):
    return _manifest(tmp_path)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, smoke_root):
    """The scores of one uninterrupted run (once per module, read only): what every resume must give."""
    folder = tmp_path_factory.mktemp("whole")
    return frozen_scores(get_spec("tiny-q2l", _manifest(folder)), smoke_root, folder / "runs")


def _interrupted(spec, smoke_root, runs, after_batches):
    """A run stopped (as by Ctrl-C) once `after_batches` batches are scored."""
    TinyNet.fail_after = after_batches
    try:
        with pytest.raises(KeyboardInterrupt):
            eval_run(spec, smoke_root, runs)
    finally:
        TinyNet.fail_after = None


def test_eval_writes_a_complete_smoke_record(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    run_dir = eval_run(spec, smoke_root, tmp_path / "runs")
    record = json.loads((run_dir / "record.json").read_text())
    n = record["dataset"]["n_images"]
    assert n == 24  # the q2l image set: every val image, unannotated ones included
    scores, labels = np.load(run_dir / "scores.npy"), np.load(run_dir / "labels.npy")
    assert scores.shape == labels.shape == (n, 80) and scores.dtype == np.float32
    assert np.all((scores > 0) & (scores < 1))
    assert record["smoke"] and {"random weights", "smoke subset"} <= set(record["smoke_reasons"])
    assert record["eval"]["protocol"] == "q2l" and record["eval"]["batch_size"] == 4
    assert record["checkpoint"]["random_weights"] is True
    assert len(record["dataset"]["fingerprint"]["labels_sha256"]) == 64
    assert 0 <= record["metrics"]["mAP"] <= 100
    assert record["config"]["weights"] == "random" and record["config"]["runs_root"] == str(tmp_path / "runs")
    assert record["config"]["workers"] == 0 and record["config"]["batch_size"] is None  # what was asked, not chosen
    assert not (run_dir / "scores.partial.npy").exists()


def test_resume_after_interruption_gives_the_same_scores(manifest, smoke_root, tmp_path, whole):
    spec = get_spec("tiny-q2l", manifest)
    _interrupted(spec, smoke_root, tmp_path / "b", after_batches=3)  # 3 batches of 4 land
    unfinished = next((tmp_path / "b" / "tiny-q2l").iterdir())
    assert json.loads((unfinished / "progress.json").read_text())["done"] == 12
    assert not (unfinished / "record.json").exists()
    run_dir = eval_run(spec, smoke_root, tmp_path / "b", resume="latest")
    assert run_dir == unfinished
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), whole)
    assert json.loads((run_dir / "record.json").read_text())["timings"]["resumed_from_row"] == 12


@pytest.mark.parametrize("text", ["{ not json", "{}", '{"done": "3"}', '{"done": 999}', '{"done": -4}', "[3]"])
def test_a_damaged_progress_file_is_one_line_and_kept(manifest, smoke_root, tmp_path, text):
    spec = get_spec("tiny-q2l", manifest)
    _interrupted(spec, smoke_root, tmp_path / "runs", after_batches=2)
    unfinished = next((tmp_path / "runs" / "tiny-q2l").iterdir())
    (unfinished / "progress.json").write_text(text)
    with pytest.raises(UserError, match=f"{unfinished / 'progress.json'} is damaged"):
        eval_run(spec, smoke_root, tmp_path / "runs", resume="latest")
    assert (unfinished / "progress.json").read_text() == text and not (unfinished / "record.json").exists()


@pytest.mark.parametrize("damage", [lambda b: b[:100], lambda b: b"\x93NUMPY garbage" + bytes(300),
                                    lambda b: _npy_bytes(np.zeros((2, 80), np.float32))])  # another shape
def test_a_damaged_partial_scores_file_is_one_line_and_kept(manifest, smoke_root, tmp_path, damage):
    spec = get_spec("tiny-q2l", manifest)
    _interrupted(spec, smoke_root, tmp_path / "runs", after_batches=2)
    unfinished = next((tmp_path / "runs" / "tiny-q2l").iterdir())
    partial = unfinished / "scores.partial.npy"
    partial.write_bytes(damage(partial.read_bytes()))
    before = partial.read_bytes()
    with pytest.raises(UserError, match=f"{partial} is damaged"):
        eval_run(spec, smoke_root, tmp_path / "runs", resume="latest")
    assert partial.read_bytes() == before and not (unfinished / "record.json").exists()


def _npy_bytes(array):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_resume_refuses_changed_settings_and_finished_runs(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    _interrupted(spec, smoke_root, tmp_path / "r", after_batches=1)
    with pytest.raises(UserError, match="batch_size"):
        eval_run(spec, smoke_root, tmp_path / "r", resume="latest", batch_size=8)
    done = eval_run(spec, smoke_root, tmp_path / "r", resume="latest")
    with pytest.raises(UserError, match="already complete"):
        eval_run(spec, smoke_root, tmp_path / "r", resume=str(done))


def test_a_new_run_never_overwrites_an_old_one(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    first = eval_run(spec, smoke_root, tmp_path / "runs", limit=5)
    before = (first / "record.json").read_bytes()
    second = eval_run(spec, smoke_root, tmp_path / "runs", limit=5)
    assert first != second and (first / "record.json").read_bytes() == before
    assert "--limit 5" in json.loads((second / "record.json").read_text())["smoke_reasons"]


def test_cli_eval_prints_the_result_and_flags_smoke(manifest, smoke_root, tmp_path, capsys):
    code = main(["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
                 "random", "--out", str(tmp_path / "runs"), "--workers", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "mAP" in out and "SMOKE" in out and "record.json" in out
    code = main(["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(tmp_path / "none"),
                 "--weights", "random", "--out", str(tmp_path / "runs")])
    assert code == 2 and "harness data coco" in capsys.readouterr().err


def _interrupt_in(monkeypatch, module, name):
    """Make module.name raise KeyboardInterrupt (Ctrl-C while the run is finishing)."""
    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(module, name, stop)


@pytest.mark.parametrize("stop_in", ["compute_metrics", "write_record"])
def test_interrupted_finish_resumes_from_saved_scores_without_rerunning(manifest, smoke_root, tmp_path, whole,
                                                                          monkeypatch, stop_in):
    spec = get_spec("tiny-q2l", manifest)
    with monkeypatch.context() as patch:
        _interrupt_in(patch, harness.eval.run if stop_in == "compute_metrics" else harness.records, stop_in)
        with pytest.raises(KeyboardInterrupt):
            eval_run(spec, smoke_root, tmp_path / "b")
    unfinished = next((tmp_path / "b" / "tiny-q2l").iterdir())
    assert not (unfinished / "record.json").exists()
    assert json.loads((unfinished / "progress.json").read_text())["done"] == 24
    assert (unfinished / "scores.partial.npy").exists()  # kept until the record is written
    calls = TinyNet.forward_calls
    run_dir = eval_run(spec, smoke_root, tmp_path / "b", resume="latest")
    assert run_dir == unfinished and TinyNet.forward_calls == calls  # finished without running the model
    record = json.loads((run_dir / "record.json").read_text())
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), whole)
    assert record["timings"]["resumed_from_row"] == 24 and 0 <= record["metrics"]["mAP"] <= 100
    assert record["measurement"]["images_per_s"] is None  # not measured in this session: null, never zero
    assert not (run_dir / "scores.partial.npy").exists() and not (run_dir / "progress.json").exists()


def test_resume_finishes_a_folder_left_with_scores_but_no_record(manifest, smoke_root, tmp_path, monkeypatch):
    """The state an older harness left: scores.npy written, partial deleted, record never written."""
    spec = get_spec("tiny-q2l", manifest)
    with monkeypatch.context() as patch:
        _interrupt_in(patch, harness.records, "write_record")
        with pytest.raises(KeyboardInterrupt):
            eval_run(spec, smoke_root, tmp_path / "r")
    unfinished = next((tmp_path / "r" / "tiny-q2l").iterdir())
    saved = np.load(unfinished / "scores.npy")
    (unfinished / "scores.partial.npy").unlink()
    (unfinished / "labels.npy").unlink()  # stopped between two of the saved arrays
    calls = TinyNet.forward_calls
    run_dir = eval_run(spec, smoke_root, tmp_path / "r", resume=str(unfinished))
    assert TinyNet.forward_calls == calls
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), saved)
    assert np.load(run_dir / "labels.npy").shape == saved.shape
    assert json.loads((run_dir / "record.json").read_text())["dataset"]["n_images"] == 24


def test_a_partial_file_lost_restarts_from_row_zero(manifest, smoke_root, tmp_path, whole):
    spec = get_spec("tiny-q2l", manifest)
    _interrupted(spec, smoke_root, tmp_path / "b", after_batches=2)
    unfinished = next((tmp_path / "b" / "tiny-q2l").iterdir())
    (unfinished / "scores.partial.npy").unlink()  # progress.json still says 8 rows, but they are gone
    run_dir = eval_run(spec, smoke_root, tmp_path / "b", resume="latest")
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), whole)
    assert json.loads((run_dir / "record.json").read_text())["timings"]["resumed_from_row"] == 0


def test_non_finite_model_output_stops_with_a_user_error_and_no_record(manifest, smoke_root, tmp_path):
    spec = get_spec("tiny-q2l", manifest)
    ids = load_labels(smoke_root, "val2014", "all").image_ids
    TinyNet.nan_after = 2  # the third batch (rows 8-11) comes back NaN
    try:
        with pytest.raises(UserError) as error:
            eval_run(spec, smoke_root, tmp_path / "n")
        message = str(error.value)
        assert "tiny-q2l" in message and "rows 8-11" in message and f"{ids[8]}-{ids[11]}" in message
        assert "checkpoint may be broken" in message and "\n" not in message
        run_dir = next((tmp_path / "n" / "tiny-q2l").iterdir())
        assert not (run_dir / "record.json").exists() and not (run_dir / "scores.npy").exists()
        assert json.loads((run_dir / "progress.json").read_text())["done"] == 8  # the bad batch is not kept
        with pytest.raises(UserError, match="NaN or inf"):  # resuming says so again, never loops
            eval_run(spec, smoke_root, tmp_path / "n", resume="latest")
    finally:
        TinyNet.nan_after = None
    assert not (run_dir / "record.json").exists()


def test_non_finite_message_under_amp_names_the_fp32_fix():
    message = _non_finite_message("q2l-x", "fp16", [16, 17, 18], np.arange(100, 200))
    assert "q2l-x" in message and "--amp off" in message and "116-118" in message
    assert "--amp off" not in _non_finite_message("q2l-x", False, [0, 1], np.arange(2))


@pytest.mark.parametrize("kw, option", [({"batch_size": 0}, "--batch-size"), ({"batch_size": -1}, "--batch-size"),
                                        ({"workers": -1}, "--workers"), ({"limit": 0}, "--limit")])
def test_bad_numbers_are_user_errors_before_any_run_folder(manifest, smoke_root, tmp_path, kw, option):
    spec = get_spec("tiny-q2l", manifest)
    with pytest.raises(UserError, match=option):
        evaluate(spec, EvalConfig(coco_root=smoke_root, weights="random", runs_root=tmp_path / "runs", progress=False,
                                  **{"workers": 0, **kw}))
    assert not (tmp_path / "runs").exists()


def test_smoke_reasons_add_unverified_weights_only_when_present(smoke_root):
    labels = load_labels(smoke_root, "val2014", "all")
    plain = {"path": "w.pth", "sha256": "ab" * 32, "pinned": False, "random_weights": False}
    assert _smoke_reasons(plain, labels, None, True) == ["smoke subset"]
    why = "weights w.pth could not be verified as the released file"
    assert _smoke_reasons({**plain, "unverified": why}, labels, 5, True) == [why, "smoke subset", "--limit 5"]
    assert "random weights" in _smoke_reasons({**plain, "random_weights": True, "unverified": None}, labels, None,
                                              False)
