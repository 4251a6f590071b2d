"""Messages that name the real cause, before any model is built (issue 23, section 4): a FIFO or a
device is not "no such file" (and a FIFO is never opened), a full disk is not "device:;", a
temporary name is never shown for the file the user named, and record strings are text in markdown."""
import errno
import os

import pytest
from fake_records import eval_record, problem

from harness import records, report
from harness.cli import main, os_error_line
from harness.manifest import load_manifest

pytestmark = pytest.mark.usefixtures("no_lock_entries")


def _one_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("harness ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _never(*_args, **_kwargs):
    pytest.fail("a model was built (or the labels read) before the paths were checked")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_predict_on_a_fifo_or_device_says_what_it_is_and_never_opens_it(tmp_path, capsys, monkeypatch, kind):
    path = tmp_path / "image.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    monkeypatch.setattr("harness.commands.predict.load_model", _never)
    assert main(["predict", "asl-tresnetm-224", str(path), "--weights", "random"]) == 2
    line = _one_line(capsys)
    assert ("a FIFO" if kind == "fifo" else "a character device") in line and "no such file" not in line


@pytest.mark.parametrize("out,words", [("exists.txt", "exists; results are never overwritten"),
                                       ("missing/x.json", "its folder")])
def test_predict_out_is_checked_before_the_model_is_built(tmp_path, capsys, monkeypatch, out, words):
    (tmp_path / "exists.txt").write_text("kept")
    monkeypatch.setattr("harness.commands.predict.load", _never)
    assert main(["predict", "asl-tresnetm-224", str(tmp_path), "--weights", "random", "--out",
                 str(tmp_path / out)]) == 2
    line = _one_line(capsys)
    assert words in line and ".tmp" not in line and (tmp_path / "exists.txt").read_text() == "kept"


@pytest.mark.parametrize("flags,words", [
    (["--weights", "{tmp}"], "--weights {tmp} is a folder; pass the checkpoint file in it"),
    (["--weights", "{tmp}/none.pth"], "--weights {tmp}/none.pth: no such file"),
    (["--weights", "random", "--config", "{tmp}/none.json"], "--config {tmp}/none.json: no such file"),
    (["--weights", "random", "--weights-dir", "{tmp}/file"], "--weights-dir {tmp}/file is a file, not a folder"),
    (["--weights", "random", "--runs", "{tmp}/file"], "is a file, not a folder"),
    (["--weights", "random", "--coco-root", "{tmp}/file"], "--coco-root {tmp}/file is a file"),
])
def test_eval_checks_every_path_before_the_labels_or_a_model(tmp_path, capsys, monkeypatch, flags, words):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("harness.commands.eval.get_spec", _never)
    flags = [f.format(tmp=tmp_path) for f in flags]
    coco = [] if "--coco-root" in flags else ["--coco-root", str(tmp_path)]
    assert main(["eval", "asl-tresnetm-224", *coco, *flags]) == 2
    assert words.format(tmp=tmp_path) in _one_line(capsys)


def test_os_errors_name_the_users_path_never_a_temporary_one_nor_an_empty_colon():
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device")) == \
        "No space left on device; the disk is full: free some space or choose another disk"
    moved = IsADirectoryError(errno.EISDIR, "Is a directory", "/r/progress.json.123-abcdef01.tmp", "/r/progress.json")
    assert os_error_line(moved).startswith("Is a directory: /r/progress.json;")
    made = FileNotFoundError(errno.ENOENT, "No such file or directory", "/n/d/.x.json.0dcff7f8.tmp")
    assert os_error_line(made).startswith("No such file or directory: /n/d/x.json;")


INJECTED = "<img src=x onerror=alert(1)> | [click](javascript:alert(2))"


def test_record_strings_are_text_in_the_markdown_report(tmp_path):
    scores, labels = problem(n=40, c=5)
    run_dir = records.new_run_dir(tmp_path / "runs", "q2l-r101-448")
    record = eval_record(run_dir, scores, labels)
    record["environment"]["gpu"]["name"] = INJECTED
    record["metrics"]["class_names"] = [INJECTED] * 5
    records.write_record(run_dir, record)
    md = report.render(report.collect(tmp_path / "runs", load_manifest(), {}, measured_root=None), "markdown")
    assert "onerror" in md  # shown, as text
    assert "<img" not in md and "](javascript" not in md and "&lt;img src=x onerror=alert(1)> \\|" in md


def test_attention_out_that_is_a_file_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    (tmp_path / "maps").write_text("kept")
    monkeypatch.setattr("harness.commands.attention.load", _never)
    assert main(["attention", "q2l-r101-448", str(tmp_path), "--weights", "random", "--out", str(tmp_path / "maps")]) == 2
    assert "is a file, not a folder" in _one_line(capsys) and (tmp_path / "maps").read_text() == "kept"


def test_eval_workers_past_four_per_core_is_refused_before_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("harness.eval.run.load_labels", _never)
    assert main(["eval", "asl-tresnetm-224", "--coco-root", str(tmp_path), "--weights", "random", "--runs",
                 str(tmp_path / "runs"), "--workers", "100000"]) == 2
    assert "--workers 100,000 is past the limit" in _one_line(capsys)


def test_eval_resume_of_a_file_says_it_is_no_run_folder(tmp_path, capsys, smoke_root, monkeypatch):
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setattr("harness.eval.run.load_labels", _never)
    monkeypatch_free = ["--coco-root", str(smoke_root), "--weights", "random", "--runs", str(tmp_path / "runs"),
                        "--workers", "0", "--no-progress"]
    assert main(["eval", "asl-tresnetm-224", *monkeypatch_free, "--resume", str(tmp_path / "notes.txt")]) == 2
    assert "is not a run folder (no settings.json" in _one_line(capsys)


def test_record_strings_never_start_a_formula_in_the_csv_report(tmp_path):
    scores, labels = problem(n=40, c=5)
    labels[:, 4] = 0  # a class without positives: its name is listed in the csv
    run_dir = records.new_run_dir(tmp_path / "runs", "q2l-r101-448")
    record = eval_record(run_dir, scores, labels)
    record["metrics"]["classes_without_positives"] = ['=HYPERLINK("http://x","y")']
    records.write_record(run_dir, record)
    text = report.render(report.collect(tmp_path / "runs", load_manifest(), {}, measured_root=None), "csv")
    assert "'=HYPERLINK" in text and ',=HYPERLINK' not in text and ',"=HYPERLINK' not in text


@pytest.mark.parametrize("under", ["", "x/y"])
def test_reproduce_checks_its_report_folder_before_any_model(tmp_path, capsys, monkeypatch, under):
    """--report-dir naming a file was found only after every model ran, and called --out."""
    monkeypatch.setattr("harness.commands.reproduce.reproduce_q2l", _never)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    report_dir = a_file / under if under else a_file
    assert main(["reproduce", "q2l", "--coco-root", str(tmp_path), "--runs", str(tmp_path / "runs"),
                 "--report-dir", str(report_dir)]) == 2
    assert "--report-dir" in _one_line(capsys) and a_file.read_text() == "mine"


def test_a_coco_root_that_is_a_file_is_named_so(tmp_path, capsys):
    a_file = tmp_path / "coco"
    a_file.write_text("")
    assert main(["data", "coco", "--root", str(a_file)]) == 2
    assert "COCO root" in (line := _one_line(capsys)) and "is a file, not a folder" in line
