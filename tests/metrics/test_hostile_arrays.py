"""Arrays and numbers a hostile user hands to `metrics`, `compare`, `rescore` and `data smoke` (issue 23):
one line (exit 2) naming the problem, before any work, never a traceback, a hang or an allocation of
what a header claims."""
import io
import json
import os
import pickle

import numpy as np
import pytest
from fake_records import eval_record, problem

from harness import records
from harness.cli import main
from harness.errors import UserError
from harness.records.arrays import load_array


def _one_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("harness ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _npy(path, array):
    np.save(path, array)
    return path


def _header_claiming(shape, dtype=np.float32, body=1000):
    """A .npy whose header announces `shape` but whose body holds `body` bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), dtype))
    header["shape"] = shape
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(body)


@pytest.fixture
def arrays(tmp_path):
    scores, labels = problem(n=40, c=5)
    return _npy(tmp_path / "scores.npy", scores), _npy(tmp_path / "labels.npy", labels), labels


@pytest.fixture
def run_dir(tmp_path):
    scores, labels = problem(n=40, c=5)
    folder = records.new_run_dir(tmp_path / "runs", "q2l-r101-448")
    records.write_record(folder, eval_record(folder, scores, labels, smoke=True))
    return folder


# ---------------------------------------------------------------- the one safe reader

@pytest.mark.parametrize("content,words", [
    (b"0.1 0.2\n0.3 0.4\n", "is a text file"),
    (pickle.dumps([[0.1, 0.2]]), "a Python pickle, never unpickled"),
    (b"", "an empty file"),
    (_header_claiming((10**12, 80)), "its header announces (1000000000000, 80)"),  # 1 KB claiming 10^12 rows
    (b"\x93NUMPY\x01\x00", "damaged .npy header"),
], ids=["text", "pickle", "empty", "header-claims-1e12-rows", "header-cut"])
def test_a_file_that_is_not_the_npy_it_claims_is_one_line_and_nothing_is_allocated(tmp_path, arrays, capsys,
                                                                                   content, words):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(content)
    assert main(["metrics", str(bad), str(arrays[1]), "--protocol", "q2l", "--no-ci"]) == 2
    line = _one_line(capsys)
    assert words in line and str(bad) in line and "pickled (object) data" not in line


def test_an_object_array_and_a_truncated_array_are_refused_by_their_header(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="holds Python objects"):
        load_array(tmp_path / "objects.npy", "scores")
    whole = _npy(tmp_path / "whole.npy", np.zeros((10, 4), np.float32)).read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[:-8])
    with pytest.raises(UserError, match="announces .10, 4. x float32 .288 bytes. but the file holds 280"):
        load_array(tmp_path / "cut.npy", "scores")


@pytest.mark.parametrize("make", ["fifo", "folder", "device", "loop"])
def test_a_fifo_device_folder_or_symlink_loop_is_one_line_and_never_opened(tmp_path, make):
    path = tmp_path / "scores.npy"
    if make == "fifo":
        os.mkfifo(path)  # opening it would block until a writer came: never opened
    elif make == "folder":
        path.mkdir()
    elif make == "device":
        path = "/dev/zero"
    else:
        os.symlink(tmp_path / "loop.npy", tmp_path / "loop.npy")
        path = tmp_path / "loop.npy"
    with pytest.raises(UserError, match="not a regular file|is a folder|symbolic links|cannot read"):
        load_array(path, "scores")


def test_shape_and_dtype_are_checked_from_the_header(tmp_path):
    path = _npy(tmp_path / "a.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(UserError, match="not 1-D"):
        load_array(path, "ids", ndim=1)
    with pytest.raises(UserError, match=r"holds \(3, 4\), not \(3, 5\)"):
        load_array(path, "scores", shape=(3, 5))
    with pytest.raises(UserError, match="not numbers"):
        load_array(_npy(tmp_path / "s.npy", np.array(["a", "b"])), "scores", kinds="fiub")
    np.testing.assert_array_equal(load_array(path, "scores", shape=(3, 4), kinds="f"), np.zeros((3, 4)))


# ---------------------------------------------------------------- labels

@pytest.mark.parametrize("value", [2, 0.5, -3])
def test_labels_other_than_0_1_or_minus_1_are_refused(tmp_path, arrays, capsys, value):
    labels = arrays[2].astype(np.float64)
    labels[3, 1] = value
    assert main(["metrics", str(arrays[0]), str(_npy(tmp_path / "l.npy", labels)), "--protocol", "asl", "--no-ci"]) == 2
    assert f"labels hold {value:g}" in _one_line(capsys)


def test_minus_one_is_still_a_negative_label(tmp_path, arrays, capsys):
    labels = arrays[2].astype(np.int64)
    labels[labels == 0] = -1
    assert main(["metrics", str(arrays[0]), str(_npy(tmp_path / "l.npy", labels)), "--protocol", "q2l", "--no-ci"]) == 0


# ---------------------------------------------------------------- bounds: the figure and the limit, before any work

def test_metrics_n_boot_past_the_limit_is_one_line_with_the_figure(arrays, capsys):
    assert main(["metrics", str(arrays[0]), str(arrays[1]), "--protocol", "q2l", "--n-boot", "1000000000"]) == 2
    line = _one_line(capsys)
    assert "--n-boot 1,000,000,000 on 40 images is 4e+10 image draws" in line and "pass --n-boot 1,000,000" in line


@pytest.mark.parametrize("flag", ["--n-perm", "--n-boot"])
def test_compare_repeats_past_the_limit_are_one_line(run_dir, capsys, flag):
    assert main(["compare", str(run_dir), str(run_dir), flag, "1000000000", "--no-progress"]) == 2
    assert f"{flag} 1,000,000,000 on 40 images" in _one_line(capsys)


def test_rescore_emulate_ranks_past_the_limit_is_refused_before_reading(run_dir, capsys):
    assert main(["rescore", str(run_dir), "--emulate-ranks", "100000000", "--no-ci"]) == 2
    assert "past the limit of 1,024" in _one_line(capsys)
    assert not list(run_dir.glob("rescore-*"))


def test_data_smoke_past_the_limit_is_refused_with_its_cost(tmp_path, capsys):
    assert main(["data", "smoke", "--out", str(tmp_path / "smoke"), "--images", "100000000"]) == 2
    line = _one_line(capsys)
    assert "100,000,096 synthetic images" in line and "the limit is 10,000" in line
    assert not (tmp_path / "smoke").exists()


# ---------------------------------------------------------------- a run's record named instead of its folder

def test_rescore_and_compare_take_a_runs_record_json_for_its_folder(run_dir, capsys):
    assert main(["rescore", str(run_dir / "record.json"), "--no-ci", "--format", "text"]) == 0
    assert main(["compare", str(run_dir / "record.json"), str(run_dir), "--n-boot", "10", "--n-perm", "10",
                 "--no-progress"]) == 0
    assert "record.json/record.json" not in capsys.readouterr().err


# ---------------------------------------------------------------- the hostile pass (docs/reliability.md, probes)

@pytest.mark.parametrize("make", ["fifo", "device"])
def test_class_names_from_a_fifo_or_device_are_refused_without_reading(arrays, tmp_path, capsys, make):
    path = tmp_path / "names.txt"
    if make == "fifo":
        os.mkfifo(path)  # open() would wait for a writer forever
    else:
        path = "/dev/zero"  # read() would never end
    assert main(["metrics", str(arrays[0]), str(arrays[1]), "--protocol", "q2l", "--no-ci",
                 "--class-names", str(path)]) == 2
    assert "not a file" in _one_line(capsys)


def test_complex_labels_are_refused(tmp_path, arrays, capsys):
    labels = _npy(tmp_path / "c.npy", arrays[2].astype(complex))
    assert main(["metrics", str(arrays[0]), str(labels), "--protocol", "asl", "--no-ci"]) == 2
    assert "labels must be numbers 0/1" in _one_line(capsys)


def test_compare_plot_is_checked_before_any_resampling(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("harness.commands.compare.compare_runs", lambda *a, **k: pytest.fail("compared first"))
    (tmp_path / "taken.png").write_bytes(b"kept")
    for plot, words in ((tmp_path / "taken.png", "exists"), (tmp_path / "no" / "x.png", "does not exist")):
        assert main(["compare", str(run_dir), str(run_dir), "--plot", str(plot), "--no-progress"]) == 2
        assert words in _one_line(capsys)


def test_rescore_and_compare_refuse_scores_edited_after_the_run(run_dir, capsys):
    scores = np.load(run_dir / "scores.npy")
    scores[0, 0] = 0.5
    np.save(run_dir / "scores.npy", scores)
    assert main(["rescore", str(run_dir), "--no-ci"]) == 2
    assert "changed after the run" in _one_line(capsys)
    assert main(["compare", str(run_dir), str(run_dir), "--no-progress"]) == 2
    assert "changed after the run" in _one_line(capsys)
    assert not list(run_dir.glob("rescore-*"))


def test_rescore_refuses_a_run_whose_image_ids_were_replaced(run_dir, capsys):
    np.save(run_dir / "image_ids.npy", np.zeros(10**6, np.int64))
    assert main(["rescore", str(run_dir), "--no-ci"]) == 2
    assert "image_ids.npy is not the file its run wrote" in _one_line(capsys)
    assert not list(run_dir.glob("rescore-*"))


def test_report_on_a_symlink_loop_is_one_line(tmp_path, capsys):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert main(["report", "--runs", str(tmp_path / "loop"), "--format", "markdown"]) == 2
    assert "not a runs folder" in _one_line(capsys)


def test_verify_fails_a_resume_row_that_is_no_number(run_dir):
    from harness.report.verify import check_run
    record = json.loads((run_dir / "record.json").read_text())
    record["timings"]["resumed_from_row"] = "abc"
    (run_dir / "record.json").write_text(json.dumps(record))
    finding = next(f for f in check_run(records.read_record(run_dir)).findings if f.check == "resume")
    assert finding.outcome == "failed" and "'abc'" in finding.why


def test_the_authors_label_file_goes_through_the_same_reader(tmp_path):
    from harness.data.authors_labels import read_label_file
    bad = tmp_path / "labels.npy"
    bad.write_bytes(_header_claiming((10**12, 80)))
    with pytest.raises(UserError, match="not a readable .npy label file .* announces"):
        read_label_file(bad)
