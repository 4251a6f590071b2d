import json

import numpy as np
import pytest
import torch

from harness.data.categories import COCO_CATEGORIES
from harness.data.coco import check_images, fingerprint, load_labels
from harness.data.dataset import CocoImages
from harness.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from harness.errors import UserError
from harness.manifest import EvalSpec


def _json(root, split="val2014"):
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def _expected_labels(data, image_ids):
    """Independent label matrix: columns by ascending category id, crowd included."""
    cats = sorted(c["id"] for c in data["categories"])
    rows = {i: np.zeros(len(cats), dtype=np.uint8) for i in image_ids}
    for ann in data["annotations"]:
        if ann["image_id"] in rows:
            rows[ann["image_id"]][cats.index(ann["category_id"])] = 1
    return np.stack([rows[i] for i in image_ids])


def test_all_image_set_is_every_image_sorted_by_id(smoke_root):
    data = _json(smoke_root)
    labels = load_labels(smoke_root, "val2014", "all")
    ids = sorted(im["id"] for im in data["images"])
    assert labels.image_ids.tolist() == ids
    assert labels.labels.shape == (len(ids), 80)
    np.testing.assert_array_equal(labels.labels, _expected_labels(data, ids))
    assert (labels.labels.sum(1) == 0).sum() >= 1  # unannotated images stay as all-negative rows
    by_id = {im["id"]: im["file_name"] for im in data["images"]}
    assert labels.file_names == [by_id[i] for i in ids]
    assert labels.category_ids == [c[0] for c in COCO_CATEGORIES]
    assert labels.category_names[0] == "person" and labels.category_names[-1] == "toothbrush"


def test_annotated_image_set_drops_images_without_instances_in_asls_order(smoke_root):
    data = _json(smoke_root)
    first_seen = list(dict.fromkeys(a["image_id"] for a in data["annotations"]))  # ASL: imgToAnns keys
    labels = load_labels(smoke_root, "val2014", "annotated")
    assert labels.image_ids.tolist() == first_seen != sorted(first_seen)
    assert len(labels) < len(data["images"])
    assert labels.labels.sum(1).min() >= 1


def test_columns_follow_category_id_even_when_json_order_differs(smoke_root, tmp_path):
    data = _json(smoke_root)
    data["categories"] = data["categories"][::-1]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    shuffled = load_labels(tmp_path, "val2014", "all")
    original = load_labels(smoke_root, "val2014", "all")
    np.testing.assert_array_equal(shuffled.labels, original.labels)
    assert shuffled.category_ids == sorted(shuffled.category_ids)


def test_crowd_annotations_count_as_positive(smoke_root):
    data = _json(smoke_root)
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    assert crowd
    labels = load_labels(smoke_root, "val2014", "all")
    for ann in crowd:
        row = labels.image_ids.tolist().index(ann["image_id"])
        assert labels.labels[row, labels.category_ids.index(ann["category_id"])] == 1


def test_fingerprint_changes_with_the_labels(smoke_root):
    labels = load_labels(smoke_root, "val2014", "all")
    fp = fingerprint(labels)
    assert fp["n_images"] == len(labels) and len(fp["annotations_sha256"]) == 64
    labels.labels[0, 0] ^= 1
    assert fingerprint(labels)["labels_sha256"] != fp["labels_sha256"]


def test_missing_files_give_one_clear_error(smoke_root, tmp_path):
    with pytest.raises(UserError, match=r"annotations not found.*harness data coco --root"):
        load_labels(tmp_path, "val2014")
    labels = load_labels(smoke_root, "val2014", "all")
    labels.file_names = labels.file_names[:-2] + ["gone_1.jpg", "gone_2.jpg"]
    with pytest.raises(UserError, match=r"2 of 24 val2014 images are missing .*first: gone_1.jpg, gone_2.jpg.*--download"):
        check_images(smoke_root, labels)


def _spec(normalize, resolution=64):
    return EvalSpec(resolution=resolution, resize="squish", normalize=normalize, image_set="all", protocol="q2l", batch_size=4)


@pytest.mark.parametrize("normalize", ["imagenet", "none"])
def test_transform_squishes_and_normalises(smoke_root, normalize):
    labels = load_labels(smoke_root, "val2014", "all")
    ds = CocoImages(smoke_root, labels, eval_transform(_spec(normalize, 96)))
    x, row = ds[5]
    assert row == 5 and x.shape == (3, 96, 96) and x.dtype == torch.float32
    raw = CocoImages(smoke_root, labels, eval_transform(_spec("none", 96)))[5][0]
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    if normalize == "imagenet":
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        torch.testing.assert_close(x, (raw - mean) / std)
    else:
        torch.testing.assert_close(x, raw)


def test_grayscale_and_cmyk_images_become_rgb(smoke_root):
    from PIL import Image

    labels = load_labels(smoke_root, "val2014", "all")
    modes = [Image.open(smoke_root / "val2014" / n).mode for n in labels.file_names]
    assert "L" in modes and "CMYK" in modes
    ds = CocoImages(smoke_root, labels, eval_transform(_spec("none", 32)))
    for mode in ("L", "CMYK"):
        x, _ = ds[modes.index(mode)]
        assert x.shape == (3, 32, 32)
    gray = ds[modes.index("L")][0]
    torch.testing.assert_close(gray[0], gray[1])
