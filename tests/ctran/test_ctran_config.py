"""A C-Tran training's settings.json: the config's run fields, compared field by field on resume;
a file written before the config existed (architecture and model id instead of `tiny`) still resumes."""
import json
from dataclasses import replace

import pytest

from harness.ctran.config import CtranTrainConfig
from harness.ctran.run_folder import open_run
from harness.errors import UserError

FOUND = {"n_train": 8, "n_val": 8, "processes": 1}


def _config(tmp_path, **changes):
    config = CtranTrainConfig(coco_root=str(tmp_path), epochs=2, batch_size=4, scale=80, crop=64, tiny=True,
                              backbone="random", limit=8, runs_root=str(tmp_path / "runs"), resume="latest")
    return replace(config, **changes)


def _old_run(tmp_path):
    """An interrupted run as the code before the config wrote it."""
    run_dir = tmp_path / "runs" / "ctran-r101-576" / "20260101T000000Z-0000"
    run_dir.mkdir(parents=True)
    arch = {"name": "ctran", "num_labels": 80, "use_lmt": True, "heads": 4, "dropout": 0.1, "blocks": [1, 1, 1, 1],
            "block": "basic", "layers": 1, "img_size": 64}
    old = {"model_id": "ctran-r101-576", "coco_root": str(tmp_path.resolve()), "use_lmt": True, "selection": "test",
           "epochs": 2, "batch_size": 4, "lr": 1e-05, "seed": 0, "scale": 80, "crop": 64, "arch": arch,
           "backbone": "random", "holdout": None, "limit": 8, "n_train": 8, "n_val": 8, "processes": 1}
    (run_dir / "settings.json").write_text(json.dumps(old, indent=2))
    return run_dir


def _settings(config):
    return {**config.settings(), **FOUND}


def test_settings_are_the_run_fields_only(tmp_path):
    config = _config(tmp_path)
    assert not {"device", "workers", "runs_root", "resume", "progress"} & set(config.settings())
    assert config.settings()["holdout"] is None and replace(config, selection="held-out").settings()["holdout"] == 0.1
    assert _settings(replace(config, workers=0, device="cpu", progress=False)) == _settings(config)


def test_an_older_settings_file_resumes(tmp_path):
    old = _old_run(tmp_path)
    assert open_run(_config(tmp_path), _settings(_config(tmp_path))) == old
    auto = _config(tmp_path, resume="auto")
    assert open_run(auto, _settings(auto)) == old


def test_changed_fields_are_named_in_one_line(tmp_path):
    old = _old_run(tmp_path)
    config = _config(tmp_path, lr=1e-4, tiny=False)
    with pytest.raises(UserError) as e:
        open_run(config, _settings(config))
    assert str(e.value) == (f"cannot resume {old}: lr, tiny differ from the interrupted run; use the same settings "
                            "or start a new run")
    auto = replace(config, resume="auto")  # auto: another run, so a new folder
    new = open_run(auto, _settings(auto))
    assert new != old and json.loads((new / "settings.json").read_text()) == _settings(auto)


@pytest.mark.parametrize("text", ["{ not json", "[1, 2]", "null"])
def test_a_damaged_settings_file_is_one_line_naming_it(tmp_path, text):
    old = _old_run(tmp_path)
    (old / "settings.json").write_text(text)
    for resume in ("latest", "auto"):
        with pytest.raises(UserError, match=f"{old / 'settings.json'} is damaged"):
            open_run(_config(tmp_path, resume=resume), _settings(_config(tmp_path)))
    assert (old / "settings.json").read_text() == text
