"""Flags with one meaning and a word each: every option says what it does, `--tables` (an output
folder in `reproduce`, an input in `report`) is gone with a line naming the new spelling, the
output flags work on nested subcommands too, and `report` names where the records are when --runs
holds none."""
import argparse

import pytest

from harness.cli import build_parser, main


def _parsers(parser, name="harness"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_and_argument_has_help_text():
    missing = [f"{name} {action.option_strings or action.dest}" for name, parser in _parsers(build_parser())
               for action in parser._actions
               if action.help is None and not isinstance(action, argparse._SubParsersAction)]
    assert not missing, missing


@pytest.mark.parametrize("argv, new, dest", [
    (["reproduce", "q2l", "--coco-root", "c", "--tables", "T"], "--report-dir", "report_dir"),
    (["report", "--tables", "T"], "--paper-tables", "paper_tables"),
])
def test_tables_is_an_old_spelling_that_says_its_new_one(argv, new, dest, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == "T"
    assert f"--tables is the old spelling of {new}" in capsys.readouterr().err
    assert getattr(build_parser().parse_args([*argv[:-2], new, "T"]), dest) == "T"


@pytest.mark.parametrize("argv", [["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", "d"],
                                  ["ctran", "train", "--coco-root", "c"]])
def test_output_flags_work_after_a_nested_subcommand(argv):
    args = build_parser().parse_args([*argv, "-q", "--no-progress"])
    assert args.quiet and args.no_progress


def test_report_without_records_names_the_runs_folder_that_has_them(tmp_path, capsys, monkeypatch):
    smoke = tmp_path / "runs" / "smoke" / "runs" / "q2l-r101-448" / "20260101T000000Z-abcd"
    smoke.mkdir(parents=True)
    (smoke / "record.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--runs", "runs", "--format", "markdown"]) == 0
    err = capsys.readouterr().err
    assert "no run record under runs/" in err and "pass --runs runs/smoke/runs" in err
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")  # no record anywhere near: the line says what --runs is
    assert main(["report", "--runs", "nowhere"]) == 0
    assert "pass --runs DIR, the folder `harness eval` wrote" in capsys.readouterr().err
