"""harness eval with an authors'-format checkpoint: the scores are the model's own sigmoid outputs."""
import json

import numpy as np
import torch
from authors_checkpoints import SMALL, randomised, save_authors_checkpoint

from harness.cli import main
from harness.data.coco import load_labels
from harness.data.dataset import CocoImages
from harness.data.transforms import eval_transform
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import DEFAULT_MANIFEST, get_spec, read_yaml


def test_eval_of_a_saved_checkpoint_scores_like_the_model(smoke_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    entry = data["models"]["q2l-tresl22k-448"]
    entry["arch"] = {k: v for k, v in SMALL.items()}
    entry["eval"].update(resolution=64, batch_size=3)
    data["models"] = {"small-q2l": entry}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(dump_yaml(data))

    model = randomised(SMALL, 7)
    ckpt = save_authors_checkpoint(model, tmp_path / "checkpoint.pkl")
    code = main(["eval", "small-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
                 str(ckpt), "--limit", "5", "--workers", "0", "--out", str(tmp_path / "runs"), "--no-progress"])
    assert code == 0
    run_dir = next((tmp_path / "runs" / "small-q2l").iterdir())
    record = json.loads((run_dir / "record.json").read_text())
    assert record["checkpoint"]["random_weights"] is False and len(record["checkpoint"]["sha256"]) == 64
    assert record["checkpoint"]["epoch"] == 12
    assert record["smoke"] and "random weights" not in record["smoke_reasons"]

    spec = get_spec("small-q2l", manifest)
    images = CocoImages(smoke_root, load_labels(smoke_root, "val2014", "all"), eval_transform(spec.eval), range(5))
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.stack([images[i][0] for i in range(5)]))).numpy()
    np.testing.assert_allclose(np.load(run_dir / "scores.npy"), expected, rtol=0, atol=1e-6)


def test_transformer_sizes_come_from_the_checkpoint(smoke_root, tmp_path, monkeypatch, capsys):
    """The manifest's feed-forward size is an assumption: the checkpoint's wins, and the record says so."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    entry = data["models"]["q2l-tresl22k-448"]
    entry["arch"] = {**SMALL, "dim_feedforward": 64, "dec_layers": 3}  # what the manifest assumed
    entry["eval"].update(resolution=64, batch_size=2)
    data["models"] = {"small-q2l": entry}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(dump_yaml(data))
    ckpt = save_authors_checkpoint(randomised(SMALL, 5), tmp_path / "checkpoint.pkl")  # ff 32, 2 decoder layers
    args = ["eval", "small-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
            str(ckpt), "--limit", "2", "--workers", "0", "--out", str(tmp_path / "runs"), "--no-progress"]
    for _attempt in range(2):  # the second load reads the safetensors copy
        assert main(args) == 0
        assert "built with the checkpoint's sizes" in capsys.readouterr().err
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "small-q2l").glob("*/record.json")]
    assert len(records) == 2
    for record in records:
        assert record["checkpoint"]["arch_from_checkpoint"] == {"dim_feedforward": 32, "dec_layers": 2}
    assert any(r["checkpoint"]["loaded_from"].endswith(".safetensors") for r in records)


def test_amp_follows_the_authors_config_and_cpu_says_it_ran_fp32(smoke_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    entry = data["models"]["q2l-tresl22k-448"]
    entry["arch"] = dict(SMALL)
    entry["eval"].update(resolution=64, batch_size=2)
    data["models"] = {"small-q2l": entry}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(dump_yaml(data))
    save_authors_checkpoint(randomised(SMALL, 2), tmp_path / "checkpoint.pkl")
    (tmp_path / "config_new.json").write_text(json.dumps({"amp": "True", "img_size": 64}))
    args = ["eval", "small-q2l", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
            str(tmp_path / "checkpoint.pkl"), "--limit", "2", "--workers", "0", "--no-progress", "--out"]
    assert main(args + [str(tmp_path / "a")]) == 0
    assert "asks for AMP" in capsys.readouterr().err
    record = json.loads(next((tmp_path / "a").glob("*/*/record.json")).read_text())
    assert record["eval"]["amp"] is False and "impossible on CPU" in record["eval"]["amp_source"]
    assert main(args + [str(tmp_path / "b"), "--amp", "off"]) == 0
    record = json.loads(next((tmp_path / "b").glob("*/*/record.json")).read_text())
    assert record["eval"]["amp_source"] == "--amp"
