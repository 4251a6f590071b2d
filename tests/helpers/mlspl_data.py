"""Synthetic MLSPL inputs: COCO-shaped instances jsons and features carrying the labels."""
import json

import numpy as np

from harness.data.categories import COCO_CATEGORIES
from harness.mlspl.features import FEATURE_FILES


def write_annotations(root, n_train=300, n_val=120, seed=3, n_json_train=None):
    """Synthetic instances jsons: categories listed out of id order, ids of mixed digit counts,
    some images without annotations, repeated categories within an image."""
    rng = np.random.default_rng(seed)
    cats = [{"id": i, "name": n, "supercategory": s} for i, n, s in COCO_CATEGORIES]
    cats = [cats[i] for i in rng.permutation(80)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    used = set()
    for split, n in (("train", n_train), ("val", n_val)):
        pool = np.r_[rng.choice(np.arange(1, 5000), n // 2, replace=False), rng.choice(600_000, n, replace=False)]
        ids = [int(i) for i in dict.fromkeys(pool) if i not in used and i > 0][:n]
        used.update(ids)
        images = [{"id": i, "file_name": f"COCO_{split}2014_{i:012d}.jpg"} for i in ids]
        annotations = []
        for i in ids[: int(0.9 * len(ids))]:
            for c in rng.choice(80, size=rng.integers(1, 7)):
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": cats[c]["id"]})
        rng.shuffle(annotations)
        if split == "train" and n_json_train:  # pad the image list, e.g. to full COCO's count
            images += [{"id": 10**9 + k} for k in range(n_json_train - len(images))]
        data = {"images": images, "annotations": annotations, "categories": cats}
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))
    return root


def synthetic_features(data_dir, out, seed=0, noise=1.0):
    """One 2048-d row per formatted row, carrying the full labels plus noise."""
    rng = np.random.default_rng(seed)
    projection = rng.normal(size=(80, 2048)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    for split, name in FEATURE_FILES.items():
        labels = np.load(data_dir / f"formatted_{split}_labels.npy").astype(np.float32)
        feats = labels @ projection + noise * rng.normal(size=(len(labels), 2048)).astype(np.float32)
        np.save(out / name, (feats / 8).astype(np.float32))
    return out
