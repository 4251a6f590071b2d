"""`harness predict` and `harness attention`: eval's scores to the bit, attention from the same pass."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_manifest
from torch import nn

from harness.cli import main
from harness.models import register_model
from harness.models.q2l import Backbone, Query2Label
from harness.models.transformer import Transformer

STRIDE = 16


class TinyBody(nn.Module):
    """A one-convolution stand-in for the CNN: one feature cell per 16 x 16 pixels."""

    def __init__(self, channels):
        super().__init__()
        self.num_channels = channels
        self.conv = nn.Conv2d(3, channels, STRIDE, stride=STRIDE)

    def forward(self, x):
        return self.conv(x)


@register_model
def tiny_q2l(num_classes=80, img_size=64, hidden_dim=16, dim_feedforward=32, enc_layers=1, dec_layers=2, nheads=4,
             **_):
    """Query2Label's own head (transformer, queries, group-wise linear) on a tiny backbone."""
    transformer = Transformer(hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward)
    return Query2Label(Backbone(TinyBody(hidden_dim)), transformer, num_classes, img_size, STRIDE)


ARCH = {"name": "tiny_q2l", "num_classes": 80, "img_size": 64, "hidden_dim": 16, "dim_feedforward": 32,
        "enc_layers": 1, "dec_layers": 2, "nheads": 4}


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    """(manifest, checkpoint of random weights saved as the Q2L authors save theirs)."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    manifest = tiny_manifest(tmp_path, "tiny-q2l", ARCH, resolution=64, batch_size=5)
    torch.manual_seed(0)
    checkpoint = tmp_path / "checkpoint.pkl"
    torch.save({"state_dict": tiny_q2l().state_dict(), "epoch": 1}, checkpoint)
    return manifest, checkpoint


def _model(manifest, checkpoint):
    from harness.explain.predict import load_model
    from harness.manifest import get_spec

    spec = get_spec("tiny-q2l", manifest)
    return spec, *load_model(spec, str(checkpoint), device="cpu")


def test_predict_scores_equal_eval_scores_bit_for_bit(setup, smoke_root, tmp_path, capsys):
    manifest, checkpoint = setup
    common = ["--manifest", str(manifest), "--weights", str(checkpoint)]
    assert main(["eval", "tiny-q2l", *common, "--coco-root", str(smoke_root), "--out", str(tmp_path / "runs"),
                 "--workers", "0", "--no-progress"]) == 0
    run_dir = next((tmp_path / "runs" / "tiny-q2l").iterdir())
    eval_scores = np.load(run_dir / "scores.npy")
    image_ids = np.load(run_dir / "image_ids.npy")

    out = tmp_path / "predict.json"
    assert main(["predict", "tiny-q2l", str(smoke_root / "val2014"), *common, "--format", "json",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [f"COCO_val2014_{i:012d}.jpg" for i in image_ids]
    assert [r["image"].rsplit("/", 1)[-1] for r in result["images"]] == names  # eval's order: by image id
    predicted = np.array([r["scores"] for r in result["images"]], dtype=np.float32)
    assert predicted.shape == eval_scores.shape and np.array_equal(predicted, eval_scores)
    assert not result["random_weights"] and result["weights_sha256"]
    for r, row in zip(result["images"], eval_scores):  # predicted = >= 0.5, highest first, at most 10
        expected = sorted((c for c in range(80) if row[c] >= 0.5), key=lambda c: -row[c])[:10]
        assert [p["label"] for p in r["predicted"]] == [result["classes"][c] for c in expected]

    capsys.readouterr()
    assert main(["predict", "tiny-q2l", str(smoke_root / "val2014" / names[3]), *common, "--format", "csv"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0][:4] == ["image", "model", "weights", "predicted"] and len(rows) == 2
    # one image is a batch of one: equal to it scored among others at batch size 1 (a CPU convolution may pick
    # another kernel for another batch size, so batch 1 and batch 4 can differ in the last bit); three
    # images of the folder, not all 24: how many are scored one by one does not change any one's scores
    assert main(["predict", "tiny-q2l", *(str(smoke_root / "val2014" / n) for n in names[2:5]), *common, "--format",
                 "json", "--batch-size", "1", "--out", str(tmp_path / "one-by-one.json")]) == 0
    one_by_one = json.loads((tmp_path / "one-by-one.json").read_text())["images"][1]
    assert one_by_one["image"].endswith(names[3])
    one_by_one = one_by_one["scores"]
    assert np.array_equal(np.array(rows[1][4:], dtype=np.float64).astype(np.float32),
                          np.array(one_by_one, dtype=np.float32))
    assert np.allclose(np.array(rows[1][4:], dtype=np.float64), eval_scores[3], rtol=0, atol=1e-6)


def test_random_weights_are_said_on_every_line_and_row(setup, smoke_root, tmp_path, capsys, monkeypatch):
    manifest, _ = setup
    # the picture is asked for its banner, not drawn (test_attention_picture.py draws the banner)
    banners = []
    monkeypatch.setattr("harness.commands.attention.figure_png",
                        lambda *a, random_weights: banners.append(random_weights) or b"\x89PNG not drawn")
    folder = tmp_path / "images"  # three of the smoke images: every line is said whatever their number
    folder.mkdir()
    for image in sorted((smoke_root / "val2014").iterdir())[:3]:
        shutil.copy(image, folder)
    for fmt in ("text", "csv"):
        capsys.readouterr()
        assert main(["predict", "tiny-q2l", str(folder), "--manifest", str(manifest), "--weights", "random",
                     "--format", fmt, "--threshold", "0.9"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()[(fmt == "csv"):]
        assert len(lines) == len(list(folder.iterdir()))
        assert all("RANDOM WEIGHTS" in line for line in lines)
    image = sorted(folder.iterdir())[0]
    assert main(["attention", "tiny-q2l", str(image), "--manifest", str(manifest), "--weights", "random",
                 "--label", "person", "--out", str(tmp_path / "maps")]) == 0  # one row of panels is enough here
    assert "RANDOM WEIGHTS" in capsys.readouterr().out and banners == [True]
    assert json.loads((tmp_path / "maps" / f"{image.stem}.attention.json").read_text())["random_weights"] is True


def test_attention_sums_to_one_and_comes_from_the_scoring_pass(setup, smoke_root):
    from harness.explain.attention import last_cross_attention, scores_and_maps
    from harness.explain.predict import score_images

    spec, model, _, device, amp_dtype = _model(*setup)
    paths = sorted((smoke_root / "val2014").iterdir())[:7]
    scores, maps = scores_and_maps(model, spec, paths, device=device)
    assert maps.shape == (7, 80, 4, 4, 4)  # images, labels, heads, H, W
    assert np.allclose(maps.sum((-1, -2)), 1, atol=1e-5) and (maps >= 0).all()
    assert np.array_equal(scores, score_images(model, spec, paths, device=device))  # hooks change no score

    # The mean over heads is what the authors' decoder returns (nn.MultiheadAttention's default average).
    attn = model.transformer.decoder.layers[-1].multihead_attn
    averaged = []
    hook = attn.register_forward_hook(lambda m, a, out: averaged.append(out[1]))
    try:
        score_images(model, spec, paths, device=device)
    finally:
        hook.remove()
    authors = torch.cat(averaged).numpy().reshape(7, 80, 4, 4)
    assert np.allclose(maps.mean(2), authors, atol=1e-6)
    with last_cross_attention(model) as store:  # one capture per forward: one per batch of 5
        score_images(model, spec, paths, device=device)
    assert [w.shape[0] for w in store] == [5, 2]


def test_attention_command_writes_png_npy_json(setup, smoke_root, tmp_path, capsys, monkeypatch):
    import matplotlib.pyplot as plt

    from harness.explain.attention import attention_figure

    manifest, checkpoint = setup
    # the picture is built from what the command passes but not rendered to PNG (savefig: most of this
    # test's time); test_attention_picture.py renders one
    pictures = []

    def built_not_rendered(image, maps, labels, scores, title, random_weights):
        pictures.append((maps, labels, scores, random_weights))
        plt.close(attention_figure(image, maps, labels, scores, title, random_weights=random_weights))
        return b"\x89PNG not rendered"

    monkeypatch.setattr("harness.commands.attention.figure_png", built_not_rendered)
    image = sorted((smoke_root / "val2014").iterdir())[0]
    out = tmp_path / "maps"
    args = ["attention", "tiny-q2l", str(image), "--manifest", str(manifest), "--weights", str(checkpoint),
            "--label", "person", "--label", "traffic light", "--out", str(out)]
    assert main(args) == 0
    stem = out / image.stem
    assert (stem.parent / f"{image.stem}.attention.png").read_bytes() == b"\x89PNG not rendered"
    maps = np.load(f"{stem}.attention.npy")
    meta = json.loads(open(f"{stem}.attention.json").read())
    assert maps.shape == (80, 4, 4, 4) and meta["shown"] == ["person", "traffic light"]
    ((drawn, labels, scores, random_weights),) = pictures  # the picture shows the two labels' maps and scores
    person, light = meta["classes"].index("person"), meta["classes"].index("traffic light")
    assert np.array_equal(drawn, maps[[person, light]]) and labels == ["person", "traffic light"]
    assert np.array_equal(scores, np.float32(meta["scores"])[[person, light]]) and random_weights is False
    spec, model, _, device, _ = _model(manifest, checkpoint)
    from harness.explain.predict import score_images
    assert np.array_equal(np.float32(meta["scores"]), score_images(model, spec, [image], device=device)[0])
    capsys.readouterr()
    assert main(args) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert all(n in err[0] for n in needles), err[0]


def test_bad_input_is_one_line_exit_2(setup, smoke_root, tmp_path, capsys):
    manifest, checkpoint = setup
    common = ["--manifest", str(manifest), "--weights", str(checkpoint)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    capsys.readouterr()
    assert main(["predict", "tiny-q2l", str(broken), *common]) == 2
    _one_line_error(capsys, "cannot decode image", "broken.jpg")
    assert main(["predict", "tiny-q2l", str(empty), *common]) == 2
    _one_line_error(capsys, "holds no images")
    assert main(["attention", "tiny-q2l", str(broken), *common, "--label", "persn"]) == 2
    _one_line_error(capsys, "'persn' is not a COCO class", "did you mean 'person'")
    assert main(["attention", "asl-tresnetl-448", str(broken)]) == 2
    _one_line_error(capsys, "no attention", "q2l")
    assert main(["attention", "mlspl-an-linear", str(broken)]) == 2
    _one_line_error(capsys, "no attention")


def test_predict_takes_a_trained_mlspl_run_folder(smoke_root, tmp_path, capsys):
    from safetensors.torch import save_file

    from harness import records
    from harness.data.images import load_rgb
    from harness.data.transforms import eval_transform
    from harness.manifest import get_spec
    from harness.models.mlspl import MLSPLResNet50

    arch = {"name": "mlspl_resnet50", "num_classes": 80, "layers": [1, 1, 1, 1]}  # one block a stage
    manifest = tiny_manifest(tmp_path, "tiny-mlspl", arch, base="mlspl-an-fine-tuned", resolution=64, batch_size=2)
    torch.manual_seed(1)
    trained = MLSPLResNet50(layers=arch["layers"]).eval()
    run_dir = records.new_run_dir(tmp_path / "runs", "tiny-mlspl")
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, run_dir / "classifier.safetensors")
    records.write_record(run_dir, {"schema": 1, "kind": "train", "run_id": run_dir.name, "model": {"id": "tiny-mlspl"},
                                   "started_at": "x", "finished_at": "y", "smoke": True,
                                   "checkpoint": {"random_weights": False}})
    images = sorted((smoke_root / "val2014").iterdir())[:3]
    assert main(["predict", "tiny-mlspl", *map(str, images), "--manifest", str(manifest), "--weights", str(run_dir),
                 "--format", "json"]) == 0
    scores = np.array([r["scores"] for r in json.loads(capsys.readouterr().out)["images"]], dtype=np.float32)
    transform = eval_transform(get_spec("tiny-mlspl", manifest).eval)
    with torch.no_grad():
        expected = torch.sigmoid(trained(torch.stack([transform(load_rgb(p)) for p in images]))).numpy()
    assert np.allclose(scores, expected, atol=1e-6)
    (tmp_path / "other").mkdir()
    other = tiny_manifest(tmp_path / "other", "tiny-mlspl-2", arch, base="mlspl-an-fine-tuned", resolution=64)
    assert main(["predict", "tiny-mlspl-2", str(images[0]), "--manifest", str(other), "--weights", str(run_dir)]) == 2
    _one_line_error(capsys, "is a run of tiny-mlspl, not tiny-mlspl-2")
