"""Environment knobs set to something that is not a number: one line naming the variable, never a traceback."""
import pytest
from download_helpers import http_file, isolated, make_spec, server  # noqa: F401 (fixtures)

from harness.download.settings import Patience
from harness.errors import UserError


@pytest.mark.parametrize("name, value", [
    ("HARNESS_RETRIES", "three"), ("HARNESS_RETRIES", "-1"), ("HARNESS_RETRIES", "2.5"),
    ("HARNESS_CONNECT_TIMEOUT", ""), ("HARNESS_READ_TIMEOUT", "0"), ("HARNESS_READ_TIMEOUT", "nan"),
    ("HARNESS_BACKOFF", "fast"), ("HARNESS_BACKOFF", "-2"),
])
def test_bad_knob_names_variable_value_and_example(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as err:
        Patience.from_env()
    message = str(err.value)
    assert f"{name}={value!r}" in message and f"set it like {name}=" in message and "\n" not in message


def test_good_knobs_are_read(monkeypatch):
    for name, value in (("HARNESS_RETRIES", " 5 "), ("HARNESS_BACKOFF", "0"),
                        ("HARNESS_CONNECT_TIMEOUT", "2.5"), ("HARNESS_READ_TIMEOUT", "7")):
        monkeypatch.setenv(name, value)
    assert Patience.from_env() == Patience(connect_timeout=2.5, read_timeout=7.0, retries=5, backoff=0.0)
    for name in ("HARNESS_RETRIES", "HARNESS_BACKOFF", "HARNESS_CONNECT_TIMEOUT", "HARNESS_READ_TIMEOUT"):
        monkeypatch.delenv(name)
    assert Patience.from_env() == Patience()


def test_cli_reports_a_bad_knob_in_one_line(tmp_path, server, monkeypatch, capsys):
    from harness.cli import main
    make_spec(tmp_path, {"checkpoint": http_file(server.url + "/ck")})
    monkeypatch.setenv("HARNESS_RETRIES", "three")
    assert main(["download", "q2l-test", "--manifest", str(tmp_path / "manifest.yaml"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "HARNESS_RETRIES='three'" in err and "Traceback" not in err
    assert server.log == []  # nothing was asked of the network
