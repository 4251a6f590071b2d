"""Decode once per resolution: several models from one pass score as each does alone, bit for bit."""
import json

import numpy as np
import pytest
import torch
from tiny_convnet import TinyConvNet
from tiny_models import MODELS, write_manifest

import harness.data.cache
from harness.cli import main
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate, evaluate_many
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import get_spec, read_yaml
from harness.models import register_model


@pytest.fixture()
def manifest(tmp_path):
    return write_manifest(tmp_path)


@pytest.fixture()
def decodes(monkeypatch):
    seen = []
    real = harness.data.cache.load_rgb
    monkeypatch.setattr(harness.data.cache, "load_rgb", lambda path: seen.append(path.name) or real(path))
    return seen


def config(smoke_root, runs, **kw):
    return EvalConfig(coco_root=smoke_root, weights="random", runs_root=runs, workers=0, progress=False, **kw)


def run_dirs(results):
    return [result.run_dir for result in results]


def _record(run_dir):
    record = json.loads((run_dir / "record.json").read_text())
    return {k: record[k] for k in ("kind", "model", "checkpoint", "dataset", "eval", "metrics", "smoke_reasons")}


def test_shared_decode_scores_equal_each_model_alone(manifest, smoke_root, tmp_path, decodes):
    specs = [get_spec(mid, manifest) for mid in MODELS]
    shared = run_dirs(evaluate_many(specs, config(smoke_root, tmp_path / "shared")))
    assert len(decodes) == 24 + 24  # each image once per resolution: the annotated models read the cache
    assert not any((tmp_path / "shared" / ".decode-cache").iterdir())  # deleted at the end
    decodes.clear()
    for spec, run_dir in zip(specs, shared):
        alone = evaluate(spec, config(smoke_root, tmp_path / "alone")).run_dir
        assert np.array_equal(np.load(run_dir / "scores.npy"), np.load(alone / "scores.npy")), spec.id
        assert np.array_equal(np.load(run_dir / "image_ids.npy"), np.load(alone / "image_ids.npy"))
        assert _record(run_dir) == _record(alone)
        notes = json.loads((run_dir / "record.json").read_text())["measurement"]["notes"]
        assert any("decode shared by sd-a, sd-b, sd-c, sd-d" in n for n in notes) or spec.id == "sd-e"
    assert len(decodes) > 100  # alone, every model decodes its own images


def test_kept_cache_is_reused_and_a_damaged_image_in_it_is_decoded_again(manifest, smoke_root, tmp_path, decodes):
    specs = [get_spec(mid, manifest) for mid in ("sd-a", "sd-c")]
    first = run_dirs(evaluate_many(specs, config(smoke_root, tmp_path / "r", keep_cache=True)))
    [cache] = (tmp_path / "r" / ".decode-cache").iterdir()
    images = np.load(cache / "images.npy", mmap_mode="r+")
    images[3, 0, 0, 0] ^= 0xFF  # one flipped byte: its checksum no longer matches
    images.flush()
    del images
    decodes.clear()
    again = run_dirs(evaluate_many(specs, config(smoke_root, tmp_path / "r")))
    assert len(decodes) == 1 and not cache.exists()
    for a, b in zip(first, again):
        assert a != b and np.array_equal(np.load(a / "scores.npy"), np.load(b / "scores.npy"))


def test_cli_eval_of_several_models_writes_a_record_each(manifest, smoke_root, tmp_path, capsys):
    code = main(["eval", "sd-a", "sd-c", "--coco-root", str(smoke_root), "--manifest", str(manifest), "--weights",
                 "random", "--workers", "1", "--out", str(tmp_path / "runs"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("record:") == 2
    assert main(["eval", "sd-a", "sd-a", "--coco-root", str(smoke_root), "--manifest", str(manifest)]) == 2
    assert "named twice" in capsys.readouterr().err


class NanNet(TinyConvNet):
    def forward(self, x):
        return super().forward(x) * float("nan")


@register_model
def tiny_nan_net(num_classes=80, **_):
    return NanNet(num_classes, pool=2)


def test_one_failing_model_does_not_stop_the_others(manifest, smoke_root, tmp_path, capsys):
    data = read_yaml(manifest.read_text())
    data["models"]["sd-nan"] = json.loads(json.dumps(data["models"]["sd-b"]))
    data["models"]["sd-nan"]["arch"] = {"name": "tiny_nan_net", "num_classes": 80}
    manifest.write_text(dump_yaml(data))
    specs = [get_spec(mid, manifest) for mid in ("sd-nan", "sd-a")]
    failed, done = evaluate_many(specs, config(smoke_root, tmp_path / "r"))
    assert "NaN" in str(failed) and (done.run_dir / "record.json").is_file()
    assert "sd-nan: FAILED" in capsys.readouterr().err


def test_tf32_switches_are_recorded_restored_and_said_in_the_report(manifest, smoke_root, tmp_path):
    from harness.report import footnotes

    before = torch.backends.cudnn.allow_tf32
    [(run_dir, _)] = evaluate_many([get_spec("sd-a", manifest)], config(smoke_root, tmp_path / "r", tf32="on"))
    numerics = json.loads((run_dir / "record.json").read_text())["eval"]["numerics"]
    assert numerics["tf32"] == "on" and numerics["matmul_allow_tf32"] and numerics["cudnn_allow_tf32"]
    assert numerics["float32_matmul_precision"] == "high" and numerics["cudnn_deterministic"]
    assert torch.backends.cudnn.allow_tf32 == before and torch.get_float32_matmul_precision() == "highest"
    row = {"run_id": "x", "gpu": "NVIDIA H200", "tf32": "on", "model": "sd-a", "classes_without_positives": [],
           "tolerance": 0.1, "image_set": "all", "n_images": 24}
    assert any("TF32 on the GPU: on for sd-a" in n for n in footnotes("q2l", [row]))
