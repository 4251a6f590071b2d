"""MLSPL training: learning on features, batched grid = separate runs, resume, fine-tuning, records.

Features here are SYNTHETIC (labels x a random projection + noise), except in the extraction
test, which runs a random-init ResNet-50 at 32 px on the smoke subset.
"""
import json

import numpy as np
import pytest
import torch
from mlspl_data import synthetic_features
from safetensors.torch import load_file
from torchvision.models.resnet import Bottleneck, ResNet

import harness.models.mlspl
from harness.cli import main
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import read_yaml
from harness.mlspl.config import FeatureConfig, TrainConfig
from harness.mlspl.features import FEATURE_FILES, compare_features, extract_features
from harness.mlspl.prepare import load_prepared
from harness.mlspl.run import train_and_evaluate
from harness.mlspl.train import mlspl_map, train_fine_tuned, train_linear_group
from harness.models.mlspl import MLSPLResNet50


def tensors(data_dir, feats_dir):
    data = load_prepared(data_dir)
    files = {s: np.load(feats_dir / n) for s, n in FEATURE_FILES.items()}
    x = {k: torch.from_numpy(files[v.source][v.rows]) for k, v in data.items()}
    observed = torch.tensor(data["train"].labels_obs, dtype=torch.float32)
    return data, (x["train"], observed), (x["val"], data["val"].labels), (x["test"], data["test"].labels)


def test_cli_linear_training_learns_and_writes_a_record(synth):
    base, feats = synth
    runs = base / "runs"
    code = main(["mlspl", "train", "--loss", "ROLE", "--mode", "linear", "--data", str(base / "data"),
                 "--features", str(feats), "--lr", "1e-3", "--batch-size", "16", "--epochs", "3",
                 "--device", "cpu", "--out", str(runs)])
    assert code == 0
    (run_dir,) = [p for p in (runs / "mlspl-role-linear").iterdir()]
    record = json.loads((run_dir / "record.json").read_text())
    data = load_prepared(base / "data")
    n_test = len(data["test"].images)
    labels = np.load(run_dir / "labels.npy")
    chance = 100 * labels.mean(0)[labels.any(0)].sum() / 80  # AP of random scores ~ positive rate
    assert record["kind"] == "train" and record["model"]["id"] == "mlspl-role-linear"
    assert record["dataset"]["n_images"] == (n_test // 16) * 16 == len(labels)  # drop_last
    assert record["metrics"]["mAP"] > max(50, 5 * chance)
    assert record["smoke"] and any("epochs" in r for r in record["smoke_reasons"])
    assert record["train"]["selected"]["test_mAP"] == pytest.approx(record["metrics"]["mAP"])
    draws = record["train"]["random_draws"]  # whose DataLoader draws were replayed, under which torch
    assert draws["dataloader_semantics"] == "torch>=1.9" and draws["torch"] == torch.__version__
    assert "torch.manual_seed(P['seed'])" in draws["replays"] and record["train"]["seeds"]["torch"] == 1200
    m = record["measurement"]  # the whole training, measured as an evaluation is
    assert m["peak_rss_mib"] > 0 and m["wall_s"] > 0 and m["peak_vram_mib"] is None
    assert "no GPU" in m["reasons"]["peak_vram_mib"] and "whole training" in m["notes"][-1]
    # The saved classifier reproduces the saved test scores.
    model = MLSPLResNet50(linear_only=True)
    model.load_state_dict(load_file(run_dir / "classifier.safetensors"))
    x = np.load(feats / FEATURE_FILES["val"])[: len(labels)]
    with torch.no_grad():
        again = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(again, np.load(run_dir / "scores.npy"), atol=1e-5)
    assert np.array_equal(labels, data["test"].labels[: len(labels)])


def test_batched_grid_equals_points_trained_alone(synth):
    base, feats = synth
    _, train, val, test = tensors(base / "data", feats)
    both = train_linear_group(train, val, test, TrainConfig("ROLE", epochs=2, seed=3), 16, [1e-2, 1e-3])
    alone = train_linear_group(train, val, test, TrainConfig("ROLE", epochs=2, seed=3), 16, [1e-3])
    assert val_maps(both[1]) == val_maps(alone[0])  # bit for bit
    assert torch.equal(both[1].head["weight"], alone[0].head["weight"])
    assert torch.equal(both[1].table, alone[0].table)
    assert np.array_equal(both[1].test_scores, alone[0].test_scores)
    assert val_maps(both[0]) != pytest.approx(val_maps(both[1]))


def val_maps(result):
    return [h["val_mAP"] for h in result.history]


@pytest.mark.parametrize("loss", ["BCE", "AN", "AN-LS", "WAN", "EPR"])
def test_every_loss_learns_on_features(synth, loss):
    base, feats = synth
    data, (x, observed), val, test = tensors(base / "data", feats)
    if loss == "BCE":
        observed = torch.tensor(data["train"].labels, dtype=torch.float32)
    (r,) = train_linear_group((x, observed), val, test, TrainConfig(loss, epochs=2), 16, [1e-2])
    chance = 100 * test[1].mean(0).sum() / 80
    assert r.test_map > 4 * chance and r.val_map == max(val_maps(r))
    assert r.best_epoch == val_maps(r).index(r.val_map)  # the first epoch reaching the best


def test_interrupted_linear_run_resumes_to_the_same_result(synth, tmp_path):
    base, feats = synth
    _, train, val, test = tensors(base / "data", feats)
    config = TrainConfig("ROLE", epochs=3, seed=1)
    full = train_linear_group(train, val, test, config, 16, [1e-3])

    def stop(epoch, _):
        if epoch == 0:
            raise KeyboardInterrupt

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_linear_group(train, val, test, config, 16, [1e-3], state_path=state, on_epoch=stop)
    resumed = train_linear_group(train, val, test, config, 16, [1e-3], state_path=state)
    assert val_maps(resumed[0]) == pytest.approx(val_maps(full[0]))
    torch.testing.assert_close(resumed[0].table, full[0].table)
    np.testing.assert_allclose(resumed[0].test_scores, full[0].test_scores)


def test_one_fine_tuning_step_on_cpu(smoke_root, smoke_data, shallow_resnet50):
    data = load_prepared(smoke_data)
    torch.manual_seed(0)
    model = MLSPLResNet50()  # shallow and narrow: the step, not the depth or width, is tested
    before = model.backbone.conv1.weight.detach().clone()
    generator = torch.Generator().manual_seed(0)
    generator_table = _initial_table_after_head(data, generator)
    config = TrainConfig("ROLE", "fine-tuned", coco_root=smoke_root, epochs=1, resolution=32, workers=0, seed=0,
                         max_steps=1)
    r = train_fine_tuned(model, data, config, (4, 1e-3))
    assert not torch.equal(model.backbone.conv1.weight.detach(), before)
    assert r.test_scores.shape == (4, 80) and len(r.history) == 1
    # Adam's first step moves only the label-estimator rows of that one batch.
    changed = (r.table != generator_table).any(1)
    assert int(changed.sum()) == 4


def _initial_table_after_head(data, generator):
    from harness.mlspl.train import _random_start

    return _random_start(generator, torch.tensor(data["train"].labels_obs), backbone=True)[1]


@pytest.fixture
def shallow_resnet50(monkeypatch):
    """MLSPLResNet50's backbone with one block a stage, each block's inner convolutions an eighth of
    ResNet-50's width: its 2048-d features and key names, about an eighth of its weights. For tests of what
    happens around the network (hand-overs, resumes, seeding), which holds for any depth and width."""
    monkeypatch.setattr(harness.models.mlspl, "resnet50",
                        lambda weights=None: ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=8))


def test_linear_init_hands_head_and_estimates_to_fine_tuning(smoke_root, smoke_data, tmp_path, shallow_resnet50):
    # The smoke val split (9 images) is smaller than the authors' ROLE batch of 16: batch 8 here.
    feats = synthetic_features(smoke_data, tmp_path / "feats")
    run_dir = train_and_evaluate(TrainConfig("ROLE", "linear-init", data_dir=smoke_data, features_dir=feats,
                                             coco_root=smoke_root, points=((4, 1e-4),), runs_root=tmp_path / "runs",
                                             device="cpu", epochs=1, resolution=32, random_weights=True, workers=0,
                                             max_steps=1, init_point=(1e-3, 8), progress=False)).run_dir
    record = json.loads((run_dir / "record.json").read_text())
    phase = record["train"]["linear_phase"]
    assert phase["fixed_point"] == [1e-3, 8] and len(phase["history"]) == 25
    assert "random weights" in record["smoke_reasons"] and "smoke subset" in record["smoke_reasons"]
    assert "linear phase lr 0.001 bs 8, not the authors' lr 0.001 bs 16" in record["smoke_reasons"]
    assert any(k.startswith("backbone.") for k in load_file(run_dir / "classifier.safetensors"))
    estimator = load_file(run_dir / "label_estimator.safetensors")
    assert estimator["logits"].shape == (len(load_prepared(smoke_data)["train"].images), 80)


def test_extraction_resumes_and_compares(smoke_root, smoke_data, tmp_path, shallow_resnet50):
    torch.manual_seed(0)
    config = FeatureConfig(resolution=32, batch_size=8, random_weights=True, workers=0)
    first = extract_features(smoke_data, smoke_root, tmp_path / "a", config, progress=False)
    full = np.load(first / FEATURE_FILES["train"])
    assert full.shape[1] == 2048 and np.isfinite(full).all()
    # Interrupt after 8 rows: a partial file with its progress; the rerun fills in the rest.
    name = FEATURE_FILES["train"][:-4]
    partial = full.copy()
    partial[8:] = 0
    np.save(first / f"{name}.partial.npy", partial)
    (first / f"{name}.progress.json").write_text(json.dumps({"done": 8}))
    (first / FEATURE_FILES["train"]).unlink()
    torch.manual_seed(0)
    extract_features(smoke_data, smoke_root, first, config, progress=False)
    np.testing.assert_allclose(np.load(first / FEATURE_FILES["train"]), full, rtol=1e-4, atol=1e-5)
    same = compare_features(first, first)
    other = compare_features(first, synthetic_features(smoke_data, tmp_path / "b"))
    assert same["train"]["cosine_min"] == pytest.approx(1.0)
    assert other["train"]["cosine_mean"] < 0.5


def test_random_weight_extraction_is_seeded(smoke_root, smoke_data, tmp_path, shallow_resnet50):
    few = tmp_path / "few"  # four rows per split: the network, not the images, is under test
    few.mkdir()
    for split in ("train", "val"):
        np.save(few / f"formatted_{split}_images.npy", np.load(smoke_data / f"formatted_{split}_images.npy")[:4])

    def features(seed, name):
        torch.manual_seed(100 + seed)  # the global generator's state must not matter
        config = FeatureConfig(resolution=32, batch_size=4, random_weights=True, workers=0, seed=seed)
        out = extract_features(few, smoke_root, tmp_path / name, config, progress=False)
        return np.load(out / FEATURE_FILES["val"]), json.loads((out / "features_meta.json").read_text())

    (a, meta), (b, _), (c, _) = features(3, "a"), features(3, "b"), features(4, "c")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert meta["seed"] == 3 and meta["random_weights"]


def test_average_precision_equals_sklearn_with_ties():
    from sklearn.metrics import average_precision_score

    from harness.mlspl.train import average_precision

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(50, 7)) / 5.0  # many ties
    labels = (rng.random((50, 7)) < 0.3).astype(np.uint8)
    labels[:, 0] = 0
    ref = [average_precision_score(labels[:, j], scores[:, j]) if labels[:, j].any() else 0.0 for j in range(7)]
    np.testing.assert_allclose(average_precision(scores, labels), ref, rtol=1e-12)


def test_map_matches_the_authors_rule():
    labels = np.array([[1, 0], [0, 0], [1, 0]])
    scores = np.array([[0.9, 0.1], [0.5, 0.2], [0.5, 0.3]])
    # class 0: ranks 0.9 (pos), then a tie 0.5/0.5 (one pos, one neg) as one step: AP = 0.5*1 + 0.5*2/3
    assert mlspl_map(scores, labels) == pytest.approx(100 * (0.5 + 1 / 3 + 0) / 2)


def test_cli_train_takes_the_model_entry_from_manifest(synth, tmp_path):

    from harness.manifest import DEFAULT_MANIFEST

    base, feats = synth
    manifest = read_yaml(DEFAULT_MANIFEST.read_text())
    entry = manifest["models"]["mlspl-an-linear"]
    entry["paper"]["metrics"]["mAP"] = 12.5  # not the paper's: only this file says so
    manifest["models"] = {"mlspl-an-linear": entry}
    path = tmp_path / "manifest.yaml"
    path.write_text(dump_yaml(manifest))
    assert main(["mlspl", "train", "--loss", "AN", "--mode", "linear", "--data", str(base / "data"),
                 "--features", str(feats), "--lr", "1e-3", "--batch-size", "16", "--epochs", "1",
                 "--device", "cpu", "--runs", str(tmp_path / "runs"), "--manifest", str(path)]) == 0
    (run_dir,) = (tmp_path / "runs" / "mlspl-an-linear").iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["model"]["paper"]["metrics"]["mAP"] == 12.5
    assert record["config"]["manifest"] == str(path.resolve())


def test_a_resumed_run_must_ask_what_its_settings_json_holds(tmp_path):
    from harness.errors import UserError
    from harness.mlspl.run import _work_dir

    config = TrainConfig("ROLE", "fine-tuned", data_dir=tmp_path, coco_root=tmp_path, points=((8, 1e-3),), epochs=10,
                         device="cpu", runs_root=tmp_path / "runs")
    work = _work_dir(config, "mlspl-role-fine-tuned", "data-sha")
    saved = json.loads((work / "settings.json").read_text())
    assert saved["workers"] == 4 and saved["loss"] == "ROLE" and saved["points"] == [[8, 1e-3]]
    assert _work_dir(config.replace(progress=False), "mlspl-role-fine-tuned", "data-sha") == work
    with pytest.raises(UserError, match=r"other settings \(workers 4 there, 2 now\)"):
        _work_dir(config.replace(workers=2), "mlspl-role-fine-tuned", "data-sha")  # its flips would change
    linear = config.replace(mode="linear", coco_root=None)
    _work_dir(linear, "mlspl-role-linear", "data-sha")
    _work_dir(linear.replace(workers=2), "mlspl-role-linear", "data-sha")  # no images: workers change nothing


@pytest.mark.parametrize("text", ["{ not json", '["loss"]'])
def test_a_damaged_settings_file_is_one_line_and_kept(tmp_path, text):
    from harness.errors import UserError
    from harness.mlspl.run import _work_dir

    config = TrainConfig("ROLE", "linear", data_dir=tmp_path, points=((8, 1e-3),), epochs=10, device="cpu",
                         runs_root=tmp_path / "runs")
    work = _work_dir(config, "mlspl-role-linear", "data-sha")
    (work / "settings.json").write_text(text)
    with pytest.raises(UserError, match=f"{work / 'settings.json'} is damaged"):
        _work_dir(config, "mlspl-role-linear", "data-sha")
    assert (work / "settings.json").read_text() == text
