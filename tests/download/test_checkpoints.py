"""Checkpoint loading: the authors' file format loads strictly and safely, or is refused clearly."""
import argparse
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from authors_checkpoints import SMALL, randomised, save_authors_checkpoint

from harness import checkpoints
from harness.checkpoints import load_checkpoint_into, read_config, read_pickle
from harness.errors import UserError
from harness.files import file_digest
from harness.manifest import get_spec, read_yaml
from harness.models import build_from_arch
from harness.pretrained import build_pretrained


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model = randomised(SMALL, 0)
    path = save_authors_checkpoint(model, d / "checkpoint.pkl")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    return {"dir": d, "path": path, "x": x, "logits": logits}


def test_authors_checkpoint_loads_strictly_and_gives_the_same_logits(saved, tmp_path):
    fresh = randomised(SMALL, 1)
    info = load_checkpoint_into(fresh, saved["path"], cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(saved["x"]), saved["logits"])
    assert info["epoch"] == 12 and info["best_mAP"] == pytest.approx(89.25)
    assert isinstance(info["best_mAP"], float)
    assert info["sha256"] == file_digest(saved["path"])


def test_second_load_uses_the_safetensors_copy_and_unpickles_nothing(saved, tmp_path, monkeypatch):
    load_checkpoint_into(randomised(SMALL, 1), saved["path"], cache_dir=tmp_path, name="m")
    assert len(list(tmp_path.glob("m-*.safetensors"))) == 1

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called although a verified copy exists")
    monkeypatch.setattr(torch, "load", no_pickle)
    again = randomised(SMALL, 2)
    info = load_checkpoint_into(again, saved["path"], cache_dir=tmp_path, name="m")
    assert info["loaded_from"].endswith(".safetensors") and info["epoch"] == 12
    with torch.no_grad():
        assert torch.equal(again(saved["x"]), saved["logits"])


def test_abn_counters_may_be_absent(saved, tmp_path):
    obj = torch.load(saved["path"], weights_only=False)
    sd = obj["state_dict"]
    dropped = [k for k in sd if k.endswith("num_batches_tracked")]
    assert dropped  # the TResNet layers have them
    for k in dropped:
        del sd[k]
    path = tmp_path / "no_counters.pkl"
    torch.save(obj, path)
    fresh = randomised(SMALL, 3)
    load_checkpoint_into(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(saved["x"]), saved["logits"])


def test_checkpoint_saved_with_numpy_1_names_loads(saved, tmp_path):
    # numpy < 2 pickles its scalars as numpy.core.multiarray.scalar: rewrite a legacy-format file so.
    legacy = tmp_path / "legacy.pkl"
    model = randomised(SMALL, 0)
    torch.save({"state_dict": model.state_dict(), "best_mAP": np.float64(80.5)}, legacy,
               _use_new_zipfile_serialization=False)
    raw = legacy.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in raw
    legacy.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    info = load_checkpoint_into(randomised(SMALL, 4), legacy)
    assert info["best_mAP"] == pytest.approx(80.5)


def test_wrong_resolution_is_refused_naming_the_position_table(saved):
    other = dict(SMALL, img_size=96)
    with pytest.raises(UserError) as e:
        load_checkpoint_into(build_from_arch(other), saved["path"])
    msg = str(e.value)
    assert "backbone.1.pe" in msg and "wrong resolution" in msg and "64 x 64" in msg
    assert len(msg.splitlines()) <= 6


def test_other_transformer_size_is_named(saved):
    with pytest.raises(UserError, match=r"other sizes than the model \(dim_feedforward: checkpoint 32, model 64\)"):
        load_checkpoint_into(build_from_arch(dict(SMALL, dim_feedforward=64)), saved["path"])


def test_wrong_model_is_refused(saved):
    with pytest.raises(UserError, match="wrong model"):
        load_checkpoint_into(build_from_arch(dict(SMALL, backbone="tresnetl")), saved["path"])


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "it-ran"
    path = tmp_path / "evil.pkl"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(UserError, match=r"system.*could run code: refused"):
        read_pickle(path)
    with pytest.raises(UserError, match="pins no sha256"):
        read_pickle(path, trust=True)
    with pytest.raises(UserError, match="not the pinned"):
        read_pickle(path, trust=True, pinned_sha256="0" * 64)
    assert not marker.exists()


def test_trust_loads_extra_types_only_for_the_pinned_file(saved, tmp_path):
    model = randomised(SMALL, 0)
    path = tmp_path / "with_args.pkl"  # older training scripts also saved their argparse Namespace
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(UserError, match="argparse.Namespace"):
        load_checkpoint_into(randomised(SMALL, 5), path)
    fresh = randomised(SMALL, 5)
    load_checkpoint_into(fresh, path, trust=True, pinned_sha256=file_digest(path))
    with torch.no_grad():
        torch.testing.assert_close(fresh(saved["x"]), model(saved["x"]), rtol=0, atol=0)


def write_config(path, **overrides):
    cfg = {"backbone": "tresnetl_v2", "hidden_dim": SMALL["hidden_dim"], "dim_feedforward": 32, "enc_layers": 1, "dec_layers": 2,
           "nheads": 4, "num_class": 80, "img_size": 64, "pre_norm": "False", "keep_input_proj": "False",
           "orid_norm": "True", "amp": False, "position_embedding": "sine"}
    cfg.update(overrides)
    path.write_text(json.dumps(cfg))
    return path


def test_config_booleans_written_as_strings_are_booleans(tmp_path):
    cfg = read_config(write_config(tmp_path / "config_new.json", pre_norm="False", amp="true"))
    assert cfg["pre_norm"] is False and cfg["amp"] is True and cfg["dim_feedforward"] == 32


def test_config_that_disagrees_with_the_weights_is_refused(saved, tmp_path):
    cfg = write_config(tmp_path / "config_new.json", dim_feedforward=8192, nheads=8)
    with pytest.raises(UserError) as e:
        load_checkpoint_into(randomised(SMALL, 6), saved["path"], cfg)
    assert "dim_feedforward=8192 but the checkpoint's weights have 32" in str(e.value)
    assert "nheads=8 but the model is built with 4" in str(e.value)


def test_config_resume_never_replaces_the_checkpoint(saved, tmp_path):
    decoy = tmp_path / "decoy.pkl"
    save_authors_checkpoint(randomised(SMALL, 7), decoy)
    cfg = write_config(tmp_path / "config_new.json", resume=str(decoy))
    fresh = randomised(SMALL, 8)
    load_checkpoint_into(fresh, saved["path"], cfg)
    with torch.no_grad():
        assert torch.equal(fresh(saved["x"]), saved["logits"])


def test_build_pretrained_fetches_both_files_and_checks_the_eval_settings(saved, tmp_path, monkeypatch):
    spec = dataclasses.replace(get_spec("q2l-tresl22k-448"), arch=dict(SMALL))
    spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, resolution=64))
    files = {"checkpoint": saved["path"], "config": write_config(tmp_path / "config_new.json")}
    asked = []

    def fake_fetch(spec_, role, *, cache_dir=None, weights_dir=None, verify=False, lock=True):
        asked.append((role, lock))
        return files[role]
    monkeypatch.setattr("harness.pretrained.fetch", fake_fetch)
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(tmp_path / "lock.yaml"))
    fresh, info = build_pretrained(spec, cache_dir=tmp_path / "home")
    fresh.eval()  # built in training mode, as create_model does
    # fetched without locking; locked only once the weights loaded strictly into the model
    assert sorted(asked) == [("checkpoint", False), ("config", False)] and info["epoch"] == 12
    assert set(read_yaml((tmp_path / "lock.yaml").read_text())[spec.id]) == {"checkpoint", "config"}
    assert list((tmp_path / "home" / "safetensors").glob(f"{spec.id}-*.safetensors"))
    with torch.no_grad():
        assert torch.equal(fresh(saved["x"]), saved["logits"])
    # The released TResNet models take inputs in [0, 1]: a config that says otherwise is caught.
    files["config"] = write_config(tmp_path / "config2.json", orid_norm=False)
    with pytest.raises(UserError, match="orid_norm=False but the manifest's eval.normalize is none"):
        build_pretrained(spec, cache_dir=tmp_path / "home")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint_into(build_from_arch(SMALL), tmp_path / "nope.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        checkpoints.read_pickle(junk)


def test_weights_given_by_path_count_only_when_they_are_the_release(tmp_path, monkeypatch):
    import dataclasses

    from harness.download.lock import record_lock
    from harness.manifest import DEFAULT_MANIFEST, get_spec
    from harness.pretrained import unverified_reason

    monkeypatch.delenv("HARNESS_LOCK_FILE", raising=False)
    manifest = tmp_path / "weights_manifest.yaml"
    manifest.write_text(DEFAULT_MANIFEST.read_text())
    spec = get_spec("q2l-r101-448", manifest)
    assert "not verified as the release" in unverified_reason(spec, "a" * 64)  # nothing pinned or locked yet
    record_lock(tmp_path / "weights_manifest.lock.yaml", spec.id, "checkpoint", "b" * 64, 10, "test")
    assert unverified_reason(spec, "b" * 64) is None
    assert "not the released file" in unverified_reason(spec, "a" * 64)
    pinned = dataclasses.replace(spec.files["checkpoint"], sha256="c" * 64)
    spec = dataclasses.replace(spec, files={**spec.files, "checkpoint": pinned})
    assert unverified_reason(spec, "c" * 64) is None and unverified_reason(spec, "b" * 64) is not None
    assert unverified_reason(get_spec("mlspl-role-linear", manifest), "a" * 64) is None  # trained here


def test_a_download_record_beside_a_named_file_is_not_trusted(tmp_path):
    from harness.checkpoints import sha256_of
    from harness.download.verify import write_record
    from harness.files import file_digest

    path = tmp_path / "checkpoint.pkl"
    path.write_bytes(b"the released bytes")
    write_record(path, file_digest(path), "test")
    recorded = path.stat().st_mtime_ns
    path.write_bytes(b"other bytes here!!")  # replaced by a file of the same size and mtime
    os.utime(path, ns=(recorded, recorded))
    assert path.stat().st_size == len(b"the released bytes")
    assert sha256_of(path) == file_digest(path)  # named by the user: hashed in full
    assert sha256_of(path, fetched=True) != file_digest(path)  # the cache's fast path reads the record
