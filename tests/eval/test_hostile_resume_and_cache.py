"""A resume and a decode cache handed over damaged or edited (issue 23): the rows a resume keeps are
checked against the digest written with them and recorded; a damaged cache is made again, and a
cache that was read is named in the record; every refusal names its real cause in one line."""
import hashlib
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_manifest
from eval_runs import eval_run, frozen_scores
from torch import nn

from harness.cli import main
from harness.errors import UserError
from harness.manifest import get_spec
from harness.models import register_model
from harness.records import read_record
from harness.report.verify import check_run


class StopAfter(nn.Module):
    """Pools colour statistics; raises KeyboardInterrupt after `stop_after` calls (an interruption)."""

    stop_after = None

    def __init__(self, num_classes=80):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if StopAfter.stop_after is not None and self.calls > StopAfter.stop_after:
            raise KeyboardInterrupt
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


@register_model
def hostile_resume_net(num_classes=80, **_):
    return StopAfter(num_classes)


def _spec(folder):
    manifest = tiny_manifest(folder, "tiny-q2l", {"name": "hostile_resume_net", "num_classes": 80}, resolution=32,
                             batch_size=4)
    return get_spec("tiny-q2l", manifest)


@pytest.fixture()
def spec(tmp_path):
    return _spec(tmp_path)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, smoke_root):
    """The scores of one uninterrupted run (once per module, read only): what every resume must give."""
    folder = tmp_path_factory.mktemp("whole")
    return frozen_scores(_spec(folder), smoke_root, folder / "runs")


def _interrupted(spec, smoke_root, runs, after_batches):
    StopAfter.stop_after = after_batches
    try:
        with pytest.raises(KeyboardInterrupt):
            eval_run(spec, smoke_root, runs)
    finally:
        StopAfter.stop_after = None
    return next((runs / "tiny-q2l").iterdir())


def _digest(rows):
    return hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()


# ---------------------------------------------------------------- the rows a resume keeps

def test_a_resume_checks_the_rows_it_keeps_and_the_record_carries_their_digest(spec, smoke_root, tmp_path,
                                                                                 whole):
    run_dir = _interrupted(spec, smoke_root, tmp_path / "b", after_batches=3)
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["done"] == 12 and progress["rows_sha256"] == _digest(np.load(run_dir / "scores.partial.npy")[:12])
    assert eval_run(spec, smoke_root, tmp_path / "b", resume="latest") == run_dir
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), whole)
    record = read_record(run_dir)
    assert record.timings["partial_rows_sha256"] == _digest(whole[:12]) and record.timings["partial_rows_checked"]
    resume = next(f for f in check_run(record).findings if f.check == "resume")
    assert resume.outcome == "held" and "as recorded" in resume.why


def test_rows_edited_before_a_resume_are_refused_and_kept(spec, smoke_root, tmp_path):
    run_dir = _interrupted(spec, smoke_root, tmp_path / "runs", after_batches=3)
    partial = np.load(run_dir / "scores.partial.npy", mmap_mode="r+")
    partial[5, 7] = 0.999  # a plausible score: only the digest can tell
    partial.flush()
    del partial
    before = (run_dir / "scores.partial.npy").read_bytes()
    with pytest.raises(UserError, match="are not the rows progress.json was written with .* they were changed"):
        eval_run(spec, smoke_root, tmp_path / "runs", resume="latest")
    assert (run_dir / "scores.partial.npy").read_bytes() == before and not (run_dir / "record.json").exists()


def test_verify_finds_merged_rows_that_differ_from_the_digest_the_resume_took(spec, smoke_root, tmp_path):
    run_dir = _interrupted(spec, smoke_root, tmp_path / "runs", after_batches=2)
    eval_run(spec, smoke_root, tmp_path / "runs", resume="latest")
    record = read_record(run_dir)
    edited = json.loads((run_dir / "record.json").read_text())
    edited["timings"]["partial_rows_sha256"] = "0" * 64
    (run_dir / "record.json").write_text(json.dumps(edited))
    resume = next(f for f in check_run(read_record(run_dir)).findings if f.check == "resume")
    assert resume.outcome == "failed" and "changed after they were merged" in resume.why
    assert record.timings["resumed_from_row"] == 8


def test_a_count_off_a_batch_boundary_is_scored_again_from_the_last_boundary(spec, smoke_root, tmp_path,
                                                                             whole):
    run_dir = _interrupted(spec, smoke_root, tmp_path / "b", after_batches=3)
    rows = np.load(run_dir / "scores.partial.npy")
    (run_dir / "progress.json").write_text(json.dumps({"done": 10, "rows_sha256": _digest(rows[:10])}))
    eval_run(spec, smoke_root, tmp_path / "b", resume="latest")
    assert read_record(run_dir).timings["resumed_from_row"] == 8  # batches of 4: rows 8-11 scored whole again
    np.testing.assert_array_equal(np.load(run_dir / "scores.npy"), whole)


def test_a_count_past_the_rows_scored_names_the_progress_file_every_time(spec, smoke_root, tmp_path):
    run_dir = _interrupted(spec, smoke_root, tmp_path / "runs", after_batches=2)
    (run_dir / "progress.json").write_text(json.dumps({"done": 24}))  # an older file without a digest
    for _ in range(2):  # the second resume names the same cause, never "did the annotations change?"
        with pytest.raises(UserError, match="progress.json counts 24 rows done but row.s. 8, 9, 10, 11, 12 .* never "
                                            "scored") as error:
            eval_run(spec, smoke_root, tmp_path / "runs", resume="latest")
        assert "annotations" not in str(error.value)
    assert not (run_dir / "scores.npy").exists() and not (run_dir / "record.json").exists()


def test_a_progress_file_that_is_a_folder_is_named_as_itself(spec, smoke_root, tmp_path, capsys):
    run_dir = _interrupted(spec, smoke_root, tmp_path / "runs", after_batches=2)
    (run_dir / "progress.json").unlink()
    (run_dir / "progress.json").mkdir()
    with pytest.raises(UserError) as error:
        eval_run(spec, smoke_root, tmp_path / "runs", resume="latest")
    assert f"{run_dir / 'progress.json'} is a folder" in str(error.value) and ".tmp" not in str(error.value)


# ---------------------------------------------------------------- the decode cache

def _cache_folder(runs):
    return next((runs / ".decode-cache").iterdir())


@pytest.fixture(scope="module")
def kept(tmp_path_factory, smoke_root):
    """The scores and decode cache of one --keep-cache run (once per module, read only)."""
    folder = tmp_path_factory.mktemp("kept")
    scores = frozen_scores(_spec(folder), smoke_root, folder / "runs", keep_cache=True)
    return scores, folder / "runs" / ".decode-cache"


def _after_a_keep_cache_run(kept, runs):
    """The cache a first --keep-cache run into `runs` leaves (a copy of the module's: its key names the
    images and resolution, not the runs folder); returns that run's scores."""
    scores, cache = kept
    shutil.copytree(cache, runs / ".decode-cache")
    return scores


@pytest.mark.parametrize("damage", ["pickled", "wrong-shape", "truncated"])
def test_a_damaged_cache_is_made_again_and_the_next_run_without_keep_cache_works(spec, smoke_root, tmp_path, damage,
                                                                                 capsys, kept):
    runs = tmp_path / "runs"
    first = _after_a_keep_cache_run(kept, runs)
    crc = _cache_folder(runs) / "crc32.npy"
    if damage == "pickled":
        np.save(crc, np.array([{"crc": 1}] * 24, dtype=object), allow_pickle=True)
    elif damage == "wrong-shape":
        np.save(crc, np.zeros((3, 2), np.int64))
    else:
        crc.write_bytes(crc.read_bytes()[:-16])
    capsys.readouterr()
    again = eval_run(spec, smoke_root, runs, keep_cache=True)
    said = "".join(capsys.readouterr())
    assert "is damaged" in said and "making it again" in said
    np.testing.assert_array_equal(np.load(again / "scores.npy"), first)
    assert "decode_cache" not in read_record(again).measurement  # made again: nothing was read from it
    np.testing.assert_array_equal(np.load(eval_run(spec, smoke_root, runs) / "scores.npy"), first)


def test_a_cache_read_is_named_in_the_record_and_an_edited_one_has_another_digest(spec, smoke_root, tmp_path, kept):
    runs = tmp_path / "runs"
    _after_a_keep_cache_run(kept, runs)
    clean = read_record(eval_run(spec, smoke_root, runs, keep_cache=True)).measurement["decode_cache"]
    assert clean["reused"] and len(clean["crc32_blake2b"]) == 64
    folder = _cache_folder(runs)
    images = np.load(folder / "images.npy", mmap_mode="r+")
    crc = np.load(folder / "crc32.npy", mmap_mode="r+")
    images[0] = 255 - images[0]  # an edit that keeps every checksum right
    crc[0] = zlib_crc(images[0])
    images.flush(), crc.flush()
    del images, crc
    edited_run = eval_run(spec, smoke_root, runs, keep_cache=True)
    edited = read_record(edited_run).measurement["decode_cache"]
    assert edited["key"] == clean["key"] and edited["crc32_blake2b"] != clean["crc32_blake2b"]
    finding = next(f for f in check_run(read_record(edited_run)).findings if f.check == "decode cache")
    assert finding.outcome == "held" and edited["crc32_blake2b"][:12] in finding.why


def zlib_crc(pixels):
    import zlib
    return zlib.crc32(np.ascontiguousarray(pixels))


def test_a_pickled_cache_array_is_never_unpickled(spec, smoke_root, tmp_path, monkeypatch, kept):
    runs = tmp_path / "runs"
    _after_a_keep_cache_run(kept, runs)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    np.save(_cache_folder(runs) / "images.npy", np.array([None], dtype=object), allow_pickle=True)
    assert main(["eval", "tiny-q2l", "--manifest", str(spec.manifest_path), "--coco-root", str(smoke_root), "--runs",
                 str(runs), "--weights", "random", "--workers", "0", "--no-progress", "--keep-cache"]) == 0
