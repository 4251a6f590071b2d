"""Every HARNESS_* variable is checked when a command starts, whether or not the command reads it:
one line naming the variable, the value and what it may be (exit 2)."""
import pytest

from harness.cli import main
from harness.inputs import environment


@pytest.mark.parametrize("name, value, says", [
    ("HARNESS_TRESNET_BN", "garbage", "torch (plain torch batch norm) or auto"),
    ("HARNESS_RETRIES", "three", "a whole number from 0 up to 100"),
    ("HARNESS_RETRIES", "1000000", "a whole number from 0 up to 100"),
    ("HARNESS_BACKOFF", "nan", "a number of seconds"),
    ("HARNESS_BACKOFF", "1e300", "a number of seconds"),
    ("HARNESS_CONNECT_TIMEOUT", "0", "above 0"),
    ("HARNESS_OFFLINE", "ture", "one of 1, true, yes, 0, false, no"),
    ("HARNESS_GIT_COMMIT", "not-a-commit", "a git commit id"),
    ("HARNESS_GDRIVE_URL", "ftp://mirror", "an http:// or https:// address"),
    ("HARNESS_COCO_URL", "images.cocodataset.org", "an http:// or https:// address"),
    ("HARNESS_HOME", "/dev/null", "a folder"),
    ("HARNESS_MANIFEST", "/dev/zero", "a manifest file"),
    ("HARNESS_MANIFEST", "/nowhere/m.yaml", "No such file"),
    ("HARNESS_LOCK_FILE", "/dev/null", "not a regular file"),
])
def test_a_bad_variable_is_one_line_even_offline_and_for_a_command_that_does_not_read_it(
        monkeypatch, capsys, name, value, says):
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    monkeypatch.setenv(name, value)
    assert main(["models"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and name in err and says in err


def test_good_values_are_read(monkeypatch):
    for name, value in {"HARNESS_TRESNET_BN": "Torch", "HARNESS_OFFLINE": "No", "HARNESS_RETRIES": "0",
                        "HARNESS_GIT_COMMIT": "ABCDEF1", "HARNESS_COCO_URL": "http://127.0.0.1:8/"}.items():
        monkeypatch.setenv(name, value)
    environment.check_all()
    assert environment.tresnet_bn() == "torch" and environment.flag("HARNESS_OFFLINE") is False
    assert environment.url("HARNESS_COCO_URL", "x") == "http://127.0.0.1:8"


def test_a_misspelt_variable_is_named_with_the_closest(monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_OFLINE", "1")
    environment.check_all()
    said = capsys.readouterr().err
    assert "HARNESS_OFLINE is set but the harness reads no such variable; did you mean HARNESS_OFFLINE?" in said
