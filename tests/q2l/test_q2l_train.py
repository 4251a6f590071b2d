"""`harness q2l train`: the command end to end on the smoke subset, its record, and bad input (one line,
exit 2, before any run folder exists)."""
import json

import pytest
import torch
from q2l_train_helpers import SMALL, smoke_config, tiny_coco

from harness.cli import main
from harness.distributed import World
from harness.errors import UserError
from harness.q2l import backbones
from harness.q2l.run import fit
from harness.q2l.session import amp_dtype, check_world


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """8 train and 4 val images: the trainings here take batches of 4 (what they record does not depend on
    how many images they trained on)."""
    return tiny_coco(tmp_path_factory.mktemp("q2l-coco"), n_val=4, n_train=8)


@pytest.fixture(scope="module")
def trained(coco, tmp_path_factory):
    """The small --smoke TResNet-L (q2l_train_helpers.SMALL): a CNN with their frozen parts, a quarter of
    ResNet-101's time."""
    runs = tmp_path_factory.mktemp("q2l-runs")
    assert main(["q2l", "train", SMALL, "--coco-root", str(coco), "--smoke", "--runs", str(runs),
                 "--batch-size", "4", "--no-progress"]) == 0
    (run_dir,) = (runs / SMALL).iterdir()
    return run_dir, json.loads((run_dir / "record.json").read_text())


def test_smoke_run_records_the_training_flagged_smoke(trained, capsys):
    run_dir, record = trained
    assert record["kind"] == "train" and record["smoke"]
    assert any("tiny backbone" in r for r in record["smoke_reasons"])
    t = record["train"]
    assert t["selection"] == "test" and "selected on test" in t["selection_note"]
    assert [h["epoch"] for h in t["history"]] == [0, 1] and t["epochs_run"] == 2
    assert t["best_model"] in ("regular", "ema") and t["best_epoch"] in (0, 1)
    assert record["metrics"]["mAP"] == pytest.approx(t["selection_mAP"], abs=1e-9)  # one image per row here
    assert t["recipe"]["sources"]["lr"].startswith("README") and t["gpu_hours"] is None
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "scores.npy").is_file()
    from safetensors import safe_open

    with safe_open(str(run_dir / "best.safetensors"), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["epoch"]) == t["best_epoch"] and json.loads(meta["model"]) == t["best_model"]


def test_the_frozen_parts_are_theirs(trained):
    frozen = trained[1]["train"]["backbone_weights"]["frozen"]
    assert any(k.startswith("backbone.0.body.body.conv1") for k in frozen)  # TResNet's stem in its `body`
    assert any(".layer1." in k for k in frozen) and not any("layer2" in k for k in frozen)


def _args(coco, runs, *extra):
    return ["q2l", "train", "q2l-r101-448", "--coco-root", str(coco), "--smoke", "--runs", str(runs), *extra]


@pytest.mark.parametrize("extra, message", [
    (["--lr", "nan"], "--lr must be a positive finite number"),
    (["--lr=-1e-4"], "--lr must be a positive finite number"),
    (["--epochs", "0"], "--epochs must be a whole number, at least 1"),
    (["--batch-size", "64"], "fewer than one batch of 64"),
    (["--micro-batch", "0"], "--micro-batch must be a whole number, at least 1"),
])
def test_bad_numbers_are_one_line_before_any_folder(coco, tmp_path, capsys, extra, message):
    assert main(_args(coco, tmp_path / "runs", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_missing_coco_root_is_one_line(tmp_path, capsys):
    assert main(_args(tmp_path / "nowhere", tmp_path / "runs")) == 2
    assert "no annotations/ folder" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_a_batch_not_divisible_by_the_world_is_refused(coco, tmp_path):
    with pytest.raises(UserError, match="does not split evenly over 3 processes"):
        check_world(smoke_config(coco, tmp_path, batch_size=8), World(rank=0, size=3))


def test_a_backbone_file_of_another_model_is_one_line(coco, tmp_path, capsys, monkeypatch):
    from harness.models.backbones.tresnet import tresnet_l

    other = tmp_path / "tresnet.pth"
    torch.save({"model": tresnet_l(layers=(1, 1, 1, 1), width_factor=0.125).state_dict()}, other)
    monkeypatch.setenv("HARNESS_OFFLINE", "1")  # the authors' log and config: not fetched, not needed here
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(backbones, "build_model", _never_built)  # checked against the meta-device backbone first
    code = main(["q2l", "train", "q2l-r101-448", "--coco-root", str(coco), "--runs", str(tmp_path / "runs"),
                 "--batch-size", "8", "--backbone-weights", str(other), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not a pretrained resnet101 file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _never_built(*_args, **_kwargs):
    pytest.fail("the model was built before its backbone file was checked")


@pytest.mark.parametrize("backbone", ["resnet101", "tresnetl", "swin_L_384_22k", "CvT_w24"])
def test_the_names_and_shapes_a_backbone_file_must_hold_cost_no_random_draw(backbone):
    """A backbone file is checked before the seeded build, against the backbone built on the meta
    device: that build must leave torch's stream where it was, and hold no memory."""
    before = torch.get_rng_state()
    expected = backbones.expected_weights(backbone, 384)
    assert torch.equal(before, torch.get_rng_state())
    assert expected and all(v.is_meta for v in expected.values())


def test_amp_fp16_on_cpu_is_refused(coco, tmp_path):
    with pytest.raises(UserError, match="needs a GPU"):
        amp_dtype(smoke_config(coco, tmp_path, amp="fp16"), "cpu")
    assert amp_dtype(smoke_config(coco, tmp_path), "cpu") is None  # their --amp: off on CPU
    assert amp_dtype(smoke_config(coco, tmp_path, amp="bf16"), "cpu") is torch.bfloat16


def test_held_out_selection_chooses_on_train2014_then_scores_val2014_once(coco, tmp_path):
    finished = fit(smoke_config(coco, tmp_path, SMALL, selection="held-out", holdout=0.5, epochs=1, batch_size=4))
    t, r = finished.record.train, finished.record
    assert t["select_split"] == "train2014" and t["n_select"] == 4 and t["n_train"] == 4
    assert "held-out" in t["selection_note"] and r.dataset["n_images"] == 4  # val2014, every image once
    assert r.metrics["mAP"] is not None
