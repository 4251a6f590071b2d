"""MLSPL preparation: the authors' files, order, single positives and split."""
import json

import numpy as np
import pytest
from mlspl_data import write_annotations

from harness.errors import UserError
from harness.mlspl.prepare import FILES, load_prepared, observe_single_positive, prepare, split_train_val


def expected_from_json(path, split):
    """An independent reading of one instances json: {image id: set of json-order columns}."""
    data = json.loads(path.read_text())
    column = {c["id"]: j for j, c in enumerate(data["categories"])}
    labels = {}
    for a in data["annotations"]:
        labels.setdefault(a["image_id"], set()).add(column[a["category_id"]])
    return labels


def authors_procedure(labels, seed=1200):
    """Their uniform observation written differently: permutations instead of in-place shuffles."""
    rng = np.random.RandomState(seed)
    chosen = []
    for row in labels:
        chosen.append(rng.permutation(np.nonzero(row == 1.0)[0])[0])
        rng.permutation(np.nonzero(row == 0.0)[0])  # the num_neg=0 draw
    return np.array(chosen)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = write_annotations(tmp_path_factory.mktemp("coco"))
    out = tmp_path_factory.mktemp("data")
    meta = prepare(root, out)
    return root, out, meta


def test_files_dtypes_and_string_order(prepared):
    root, out, _ = prepared
    for split, width in (("train", 41), ("val", 37)):
        images = np.load(out / f"formatted_{split}_images.npy")
        labels = np.load(out / f"formatted_{split}_labels.npy")
        obs = np.load(out / f"formatted_{split}_labels_obs.npy")
        assert images.dtype == np.dtype(f"<U{width}") and labels.dtype == obs.dtype == np.float64
        truth = expected_from_json(root / "annotations" / f"instances_{split}2014.json", split)
        ids = [int(p.rsplit("_", 1)[1][:-4]) for p in images]
        assert ids == sorted(truth, key=str)  # annotated images only, sorted as strings
        assert ids != sorted(truth)  # the data is built so numeric order differs
        assert images[0] == f"{split}2014/COCO_{split}2014_{ids[0]:012d}.jpg"
        expected = np.zeros_like(labels)
        for r, i in enumerate(ids):
            expected[r, sorted(truth[i])] = 1
        np.testing.assert_array_equal(labels, expected)


def test_single_positives_follow_the_authors_procedure(prepared):
    _, out, _ = prepared
    for split in ("train", "val"):
        labels = np.load(out / f"formatted_{split}_labels.npy")
        obs = np.load(out / f"formatted_{split}_labels_obs.npy")
        assert np.all(obs.sum(1) == 1) and set(np.unique(obs)) == {0.0, 1.0}
        assert np.all(labels[obs == 1] == 1)  # the kept positive is a true positive
        np.testing.assert_array_equal(obs.argmax(1), authors_procedure(labels))


def test_negative_shuffle_consumes_random_state():
    labels = (np.random.default_rng(0).random((200, 80)) < 0.05).astype(float)
    labels[:, 0] = 1
    ours = observe_single_positive(labels).argmax(1)
    rng, without = np.random.RandomState(1200), []
    for row in labels:
        pos = np.flatnonzero(row == 1)
        rng.shuffle(pos)
        without.append(pos[0])
    assert np.array_equal(ours, authors_procedure(labels))
    assert not np.array_equal(ours, without)  # forgetting the second shuffle is caught


def test_deterministic_and_no_overwrite(prepared, tmp_path):
    root, out, meta = prepared
    again = prepare(root, tmp_path / "again")
    for name in FILES:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert again["sha256"] == meta["sha256"]
    prepare(root, tmp_path / "again")  # same content: accepted
    np.save(tmp_path / "again" / "formatted_val_labels_obs.npy", np.zeros((3, 80)))
    with pytest.raises(UserError, match="differs"):
        prepare(root, tmp_path / "again")


def test_split_and_load(prepared):
    _, out, meta = prepared
    data = load_prepared(out)
    n = len(np.load(out / "formatted_train_images.npy"))
    n_val = int(round(0.2 * n))
    assert (len(data["train"].rows), len(data["val"].rows)) == (n - n_val, n_val) == \
           (meta["counts"]["train"], meta["counts"]["val"])
    rows = np.concatenate([data["train"].rows, data["val"].rows])
    assert np.array_equal(np.sort(rows), np.arange(n))
    assert all(np.all(np.diff(data[s].rows) > 0) for s in ("train", "val"))
    perm = np.random.RandomState(1200).permutation(n)
    assert set(perm[-n_val:]) == set(data["val"].rows)
    assert data["test"].source == "val" and len(data["test"].images) == meta["counts"]["test"]
    # 65,665 / 16,416 on real COCO's 82,081 annotated training images
    assert [len(x) for x in split_train_val(82_081)] == [65_665, 16_416]


def test_full_coco_counts_are_checked(tmp_path):
    # A json that claims full COCO's 82,783 images but annotates only a few must fail the check,
    # as one line naming the file, found and expected counts, and the fix.
    root = write_annotations(tmp_path / "coco", n_train=50, n_val=20, n_json_train=82_783)
    train = json.loads((root / "annotations" / "instances_train2014.json").read_text())
    n_annotated = len({a["image_id"] for a in train["annotations"]})
    with pytest.raises(UserError, match=rf"instances_train2014\.json lists the 82783 images .* but {n_annotated} "
                                        rf"of them have annotations, expected 82081.*"
                                        rf"harness data coco --root .* --download"):
        prepare(root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_category_is_a_user_error(tmp_path):
    root = write_annotations(tmp_path / "coco", n_train=50, n_val=20)
    path = root / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"instances_val2014\.json: annotations use category ids \[999\]"):
        prepare(root, tmp_path / "out")


def test_missing_annotations_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="instances_train2014.json"):
        prepare(tmp_path, tmp_path / "out")


def test_smoke_subset(smoke_root, tmp_path):
    meta = prepare(smoke_root, tmp_path)
    assert meta["smoke_subset"] is True
    val = json.loads((smoke_root / "annotations" / "instances_val2014.json").read_text())
    assert meta["counts"]["test"] == len({a["image_id"] for a in val["annotations"]}) < len(val["images"])
