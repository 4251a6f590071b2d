"""The batch size is the authors' config_new.json's (their q2l_infer.py applies it over -b), recorded
with its source; --batch-size overrides it and is recorded as a deviation."""
import json

import pytest
import torch
from tiny_release import make_release

from harness.cli import main
from harness.errors import UserError
from harness.eval.batch_size import choose_batch_size, config_batch_size
from harness.manifest import get_spec


def run_eval(smoke_root, tmp_path, monkeypatch, *extra):
    """The record of one `harness eval`, and the batch sizes its DataLoader was given."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    manifest, checkpoint = make_release(tmp_path, {"batch_size": 3, "img_size": 32})
    used, real = [], torch.utils.data.DataLoader
    monkeypatch.setattr(torch.utils.data, "DataLoader", lambda *a, **k: used.append(k["batch_size"]) or real(*a, **k))
    args = ["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
            str(checkpoint), "--limit", "5", "--workers", "0", "--no-progress", "--out", str(tmp_path / "runs"),
            *extra]
    assert main(args) == 0
    return json.loads(next((tmp_path / "runs").glob("tiny-q2l/*/record.json")).read_text()), used


def test_config_batch_size_is_the_default_and_recorded(smoke_root, tmp_path, monkeypatch):
    record, used = run_eval(smoke_root, tmp_path, monkeypatch)
    assert used == [3] and record["eval"]["batch_size"] == 3  # the config's, not the manifest's 4
    assert "config_new.json" in record["eval"]["batch_size_source"] and record["eval"]["deviations"] == []
    env = record["environment"]
    assert env["pillow"] and (env["libjpeg_turbo"] or env["libjpeg"])  # every record names its image libraries


def test_batch_size_option_wins_and_is_a_deviation(smoke_root, tmp_path, monkeypatch):
    record, used = run_eval(smoke_root, tmp_path, monkeypatch, "--batch-size", "2")
    assert used == [2] and record["eval"]["batch_size"] == 2
    assert record["eval"]["batch_size_source"] == "--batch-size"
    assert len(record["eval"]["deviations"]) == 1 and "instead of 3" in record["eval"]["deviations"][0]


def test_choice_without_config_and_with_the_same_value(tmp_path):
    manifest, _ = make_release(tmp_path, {"batch_size": 3})
    spec = get_spec("tiny-q2l", manifest)
    assert choose_batch_size(spec, None, None)[:2] == (4, "manifest eval.batch_size")
    assert choose_batch_size(spec, 3, tmp_path / "config_new.json")[2] == []  # the config's own value
    assert choose_batch_size(spec, 8, None)[2]  # another than the manifest's: a deviation too


def test_bad_config_batch_size_names_the_file_and_the_fix(tmp_path):
    config = tmp_path / "config_new.json"
    for bad in ("many", 0, 2.5):
        config.write_text(json.dumps({"batch_size": bad}))
        with pytest.raises(UserError, match="batch_size .*--batch-size"):
            config_batch_size(config)
    config.write_text(json.dumps({"lr": 1e-4}))
    assert config_batch_size(config) is None
