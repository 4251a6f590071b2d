"""The uint8 loader + on-device normalisation give the bits of the authors' CPU transform."""
import json

import numpy as np
import torch
from conftest import tiny_manifest
from PIL import Image
from tiny_convnet import TinyConvNet

from harness.data.coco import load_labels
from harness.data.dataset import CocoImages
from harness.data.images import load_rgb
from harness.data.loader import make_loader, usable_cores
from harness.data.transforms import ResizeToUint8, eval_transform, to_model_input
from harness.eval.config import EvalConfig
from harness.eval.run import evaluate
from harness.manifest import EvalSpec, get_spec
from harness.models import register_model


@register_model
def tiny_loader_net(num_classes=80, width=4, **_):
    return TinyConvNet(num_classes, width, pool=4)


def _spec(normalize, resolution):
    return EvalSpec(resolution=resolution, resize="squish", normalize=normalize, image_set="all", protocol="q2l",
                    batch_size=4)


def _odd_jpegs(folder):
    """Photo-like JPEGs of odd sizes and qualities, one grayscale: noise over smooth gradients."""
    rng = np.random.default_rng(0)
    paths = []
    sizes = [(641, 427, 85), (427, 640, 95), (333, 517, 90), (1001, 13, 88), (97, 101, 92), (37, 37, 90)]
    for k, (w, h, q) in enumerate(sizes):  # the last one is already 37 x 37: torchvision does not resize it
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1)
        pixels = np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels)
        if k == 4:
            img = img.convert("L")
        paths.append(folder / f"odd{k}.jpg")
        img.save(paths[-1], quality=q)
    return paths


def test_device_normalisation_is_bit_identical_to_totensor_normalize(smoke_root, tmp_path):
    files = sorted((smoke_root / "val2014").iterdir())[:4] + _odd_jpegs(tmp_path)
    images = [load_rgb(path) for path in files]
    for resolution in (224, 37):
        shipped = ResizeToUint8(resolution)
        u8 = [shipped(img) for img in images]
        assert all(x.dtype == torch.uint8 and x.shape == (3, resolution, resolution) for x in u8)
        for normalize in ("imagenet", "none"):
            reference = eval_transform(_spec(normalize, resolution))
            got = to_model_input(torch.stack(u8), normalize)
            want = torch.stack([reference(img) for img in images])
            assert got.dtype == torch.float32 and torch.equal(got, want), (resolution, normalize)


def test_loader_ships_uint8_in_row_order_with_every_core(smoke_root):
    labels = load_labels(smoke_root, "val2014", "all")
    loader = make_loader(CocoImages(smoke_root, labels, ResizeToUint8(32), indices=range(3, 14)), 4, "cpu", workers=2)
    batches = list(loader)
    assert [b[1].tolist() for b in batches] == [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13]]
    assert all(b[0].dtype == torch.uint8 for b in batches)
    assert loader.persistent_workers and make_loader([], 1, "cpu").num_workers == usable_cores()


def test_eval_scores_equal_the_float_cpu_path_bit_for_bit(smoke_root, tmp_path):
    """Today's path, written out: ToTensor + Normalize on the CPU, float32 batches into the model."""
    manifest = tiny_manifest(tmp_path, "tiny-norm", {"name": "tiny_loader_net", "num_classes": 80},
                             resolution=32, batch_size=5)
    spec = get_spec("tiny-norm", manifest)
    run_dir = evaluate(spec, EvalConfig(coco_root=smoke_root, weights="random", runs_root=tmp_path / "runs", workers=0,
                                        progress=False)).run_dir
    scores = np.load(run_dir / "scores.npy")

    from harness.eval.run import _build_model
    model, _ = _build_model(spec, EvalConfig(coco_root=smoke_root, weights="random"), "cpu")
    labels = load_labels(smoke_root, "val2014", "all")
    ds = CocoImages(smoke_root, labels, eval_transform(spec.eval))
    with torch.inference_mode():
        expected = torch.cat([torch.sigmoid(model(torch.stack([ds[i][0] for i in range(s, min(s + 5, len(ds)))])))
                              for s in range(0, len(ds), 5)]).numpy()
    assert np.array_equal(scores, expected)
    assert json.loads((run_dir / "record.json").read_text())["eval"]["normalize"] == "imagenet"
