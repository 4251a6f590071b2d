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
