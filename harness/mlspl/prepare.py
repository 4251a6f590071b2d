"""The authors' data preparation for COCO 2014, file for file.

Their `preproc/format_coco.py` writes `formatted_{train,val}_{images,labels}.npy`, their
`preproc/generate_observed_labels.py` writes `formatted_{train,val}_labels_obs.npy`, and their
`datasets.py` splits formatted train 80/20 into train/val when it loads (so do we, in
`load_prepared`). Test = formatted val (= val2014). Our files are byte-identical to theirs:
images are unicode path strings 'train2014/COCO_train2014_<id:012d>.jpg' (dtype <U41 / <U37),
labels and observed labels are float64 0/1 matrices, all saved with plain `np.save`.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import progress
from harness.data.coco import SPLIT_SIZES
from harness.data.smoke import is_smoke_root
from harness.errors import UserError
from harness.files import file_digest as file_sha256
from harness.records.arrays import load_array

SEED = 1200  # their seed for the single positives and for the split
VAL_FRAC = 0.2
FILES = [f"formatted_{s}_{kind}.npy" for s in ("train", "val") for kind in ("images", "labels", "labels_obs")]
# Full COCO 2014: images in the json, annotated images, and the split they must give.
FULL_TRAIN_IMAGES, FULL_VAL_IMAGES = SPLIT_SIZES["train2014"][0], SPLIT_SIZES["val2014"][0]
FULL_COUNTS = {"train": 65_665, "val": 16_416, "test": 40_137}


def format_split(instances, split):
    """(image paths, 0/1 float64 label matrix) of the annotated images, ids sorted as strings."""
    column = {c["id"]: i for i, c in enumerate(instances["categories"])}  # json order, not id order
    unknown = sorted({int(a["category_id"]) for a in instances["annotations"]} - set(column))
    if unknown:
        raise UserError(f"instances_{split}2014.json: annotations use category ids {unknown[:5]} missing from its "
                        f"categories; the file is damaged: use the official COCO 2014 annotations")
    ids = sorted({str(a["image_id"]) for a in instances["annotations"]})  # string sort, as theirs
    row = {int(image_id): i for i, image_id in enumerate(ids)}
    labels = np.zeros((len(ids), len(column)))
    for a in instances["annotations"]:
        labels[row[int(a["image_id"])], column[int(a["category_id"])]] = 1
    images = np.array([f"{split}2014/COCO_{split}2014_{int(i):012d}.jpg" for i in ids])
    return images, labels


def observe_single_positive(labels, seed=SEED):
    """Keep one random positive per row, with their random calls in their order.

    For each row, a fresh-per-split RandomState shuffles the row's positive indices (first is
    kept) and then shuffles its negative indices too, keeping none: that second shuffle
    consumes random state, so leaving it out would change every later row's positive.
    """
    rng = np.random.RandomState(seed)
    observed = np.zeros_like(labels)
    for i, row in enumerate(labels):
        positives = np.flatnonzero(row == 1)
        rng.shuffle(positives)
        observed[i, positives[:1]] = 1.0
        rng.shuffle(np.flatnonzero(row == 0))  # their num_neg=0 draw: consumes state, keeps nothing
    return observed


def split_train_val(n, frac=VAL_FRAC, seed=SEED):
    """Sorted (train rows, val rows) of formatted train: val = the last round(frac n) of a permutation."""
    n_val = int(np.round(frac * n))
    if n_val == 0:
        raise UserError(f"only {n} annotated training images: too few for a {frac:.0%} validation split; use more images")
    order = np.random.RandomState(seed).permutation(n)
    return np.sort(order[: n - n_val]), np.sort(order[n - n_val:])




def _read_instances(coco_root, split):
    path = Path(coco_root) / "annotations" / f"instances_{split}2014.json"
    if not path.is_file():
        raise UserError(f"{path} not found; pass --coco-root DIR holding annotations/instances_{{train,val}}2014.json")
    with open(path) as f:
        return json.load(f), path


def _check_full_coco(path, n_json_images, split, n_rows, expected_json):
    # Only the real COCO json is checked against the published counts; a subset is not.
    if n_json_images == expected_json:
        want = FULL_COUNTS["test"] if split == "val" else FULL_COUNTS["train"] + FULL_COUNTS["val"]
        if n_rows != want:
            raise UserError(f"{path} lists the {n_json_images} images of full COCO {split}2014 but {n_rows} of them "
                            f"have annotations, expected {want}: the file is incomplete or altered; delete it and "
                            f"fetch it again with `harness data coco --root {path.parent.parent} --download`")


def prepare(coco_root, out_dir):
    """Write the authors' six files into out_dir; return the metadata also saved as mlspl_prepare.json."""
    out = Path(out_dir)
    arrays, meta = {}, {"seed": SEED, "val_frac": VAL_FRAC, "annotations_sha256": {}, "n_json_images": {}}
    categories = None
    for split in ("train", "val"):
        with progress.step(f"reading instances_{split}2014.json and formatting its labels"):
            instances, path = _read_instances(coco_root, split)
        cats = [(c["id"], c["name"]) for c in instances["categories"]]
        if categories is not None and cats != categories:  # their script asserts the same
            raise UserError("train2014 and val2014 list different categories; use the official annotation files")
        categories = cats
        images, labels = format_split(instances, split)
        observed = observe_single_positive(labels)
        assert np.all(observed.sum(1) == 1), "every annotated image must keep exactly one positive"
        n_json = len(instances["images"])
        _check_full_coco(path, n_json, split, len(images), FULL_TRAIN_IMAGES if split == "train" else FULL_VAL_IMAGES)
        arrays.update({f"formatted_{split}_images.npy": images, f"formatted_{split}_labels.npy": labels,
                       f"formatted_{split}_labels_obs.npy": observed})
        meta["annotations_sha256"][split] = file_sha256(path)
        meta["n_json_images"][split] = n_json
    n_train, n_val = (len(r) for r in split_train_val(len(arrays["formatted_train_images.npy"])))
    meta["counts"] = {"train": n_train, "val": n_val, "test": len(arrays["formatted_val_images.npy"])}
    meta["category_ids"] = [c[0] for c in categories]
    meta["smoke_subset"] = is_smoke_root(coco_root)
    if meta["n_json_images"]["train"] == FULL_TRAIN_IMAGES:  # invariant: _check_full_coco fixed n = 82,081
        assert meta["counts"]["train"] == FULL_COUNTS["train"] and meta["counts"]["val"] == FULL_COUNTS["val"]
    _write_new(out, arrays, meta)
    return meta


def _write_new(out, arrays, meta):
    """Write the files; an existing different file is never overwritten."""
    out.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        path = out / name
        if path.exists():
            old = load_array(path, "prepared labels")
            if old.dtype != array.dtype or not np.array_equal(old, array):
                raise UserError(f"{path} exists and differs from this preparation; choose an empty --out directory")
            continue
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        tmp.replace(path)
    meta["sha256"] = {name: file_sha256(out / name) for name in arrays}
    (out / "mlspl_prepare.json").write_text(json.dumps(meta, indent=1) + "\n")


@dataclass
class Split:
    """One of train / val / test: rows of a formatted file (`source`), in the authors' order."""
    name: str
    source: str  # "train" or "val": which formatted_* file (and features file) the rows index
    rows: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    labels_obs: np.ndarray

    @property
    def image_ids(self):
        return np.array([int(p.rsplit("_", 1)[1][:-4]) for p in self.images], dtype=np.int64)


def load_prepared(data_dir):
    """{'train', 'val', 'test'} as their datasets.py builds them (split at load time)."""
    data = Path(data_dir)
    missing = [name for name in FILES if not (data / name).is_file()]
    if missing:
        raise UserError(f"{data}: missing {', '.join(missing)}; run `harness mlspl prepare --coco-root DIR --out {data}`")
    src = {name[len("formatted_"):-len(".npy")]: load_array(data / name, name) for name in FILES}
    train_rows, val_rows = split_train_val(len(src["train_images"]))
    # Their ss_frac_{train,val} = 1.0 subsampling keeps every row in order: nothing to do.
    splits = {"train": ("train", train_rows), "val": ("train", val_rows),
              "test": ("val", np.arange(len(src["val_images"])))}
    return {name: Split(name, source, rows, src[f"{source}_images"][rows], src[f"{source}_labels"][rows],
                        src[f"{source}_labels_obs"][rows])
            for name, (source, rows) in splits.items()}
