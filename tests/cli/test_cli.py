import subprocess
import sys

import pytest

from harness.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: harness " + command)


def test_help_lists_every_subcommand():
    text = build_parser().format_help()
    for command in COMMANDS:
        assert command in text


def test_console_script_runs_and_user_error_exits_2():
    ok = subprocess.run([sys.executable, "-m", "harness", "models"], capture_output=True, text=True)
    assert ok.returncode == 0 and "q2l-r101-448" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "harness", "models", "--manifest", "/nonexistent.yaml"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "manifest not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_file_system_problems_are_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["report", "--runs", str(tmp_path), "--out", str(blocker / "report.md")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a-file" in err and "Traceback" not in err
    assert main(["report", "--runs", str(tmp_path), "--format", "all", "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_eval_with_a_missing_weights_file_is_one_line(smoke_root, tmp_path, capsys):
    code = main(["eval", "q2l-r101-448", "--coco-root", str(smoke_root), "--weights", str(tmp_path / "nope.pkl"),
                 "--out", str(tmp_path / "runs"), "--workers", "0", "--no-progress"])
    assert code == 2 and "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["eval", "m", "--coco-root", "c"], ["bench", "m"], ["reproduce", "q2l", "--coco-root", "c"],
                                  ["ctran", "train", "--coco-root", "c"],
                                  ["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", "d"]])
def test_runs_folder_is_runs_on_every_command_and_out_is_its_old_spelling(argv):
    parser = build_parser()
    assert parser.parse_args(argv).runs == "runs"  # the default
    assert parser.parse_args([*argv, "--runs", "R"]).runs == "R"
    assert parser.parse_args([*argv, "--out", "R"]).runs == "R"
    report = parser.parse_args(["report", "--runs", "R", "--out", "F", "--paper-tables", "P"])
    assert (report.runs, report.out, report.paper_tables) == ("R", "F", "P")  # report: --out is the report file
    assert parser.parse_args(["report", "--tables", "P"]).paper_tables == "P"


@pytest.mark.parametrize("argv", [["eval", "m", "--coco-root", "c"], ["bench", "m"], ["reproduce", "q2l", "--coco-root", "c"],
                                  ["ctran", "train", "--coco-root", "c"],
                                  ["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", "d"]])
def test_runs_and_out_naming_two_folders_is_refused(argv, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args([*argv, "--runs", "A", "--out", "B"])
    assert e.value.code == 2
    assert "--runs A and --out B name two runs folders" in capsys.readouterr().err
    assert parser.parse_args([*argv, "--out", "A", "--runs", "A"]).runs == "A"  # the same folder twice is fine


@pytest.mark.parametrize("argv", [["data", "smoke", "--out", "x", "--images", "abc"], ["frobnicate"], ["eval"],
                                  ["mlspl", "train", "--bogus"], ["models", "--format", "xml"]])
def test_a_bad_flag_is_one_line_naming_the_help(argv, capsys):
    """argparse printed its usage block before the error (up to 10 lines): one line now, and where to look."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "error: " in err and "--help`" in err


def test_an_interrupted_training_counts_its_kept_epochs_from_1_as_its_epoch_lines_do(tmp_path):
    """C-Tran and Query2Label share the line; Query2Label's said 'epochs 0-1' for its epoch lines 1 and 2."""
    from harness.errors import Interrupted

    stop = Interrupted.in_training("q2l-r101-448", tmp_path, 2)
    assert stop.saved == [f"q2l-r101-448: epochs 1-2 are kept in {tmp_path}"] and stop.resume == ("--resume", str(tmp_path))
    assert Interrupted.in_training("x", tmp_path, 0).saved == [f"x: no epoch had finished; its settings are kept in {tmp_path}"]
    assert Interrupted.in_training("x", None, 0).resume is None
