"""COCO 2014 for multi-label classification: label matrix, image-set conventions, dataset.

Columns are the 80 categories in ascending category id (every codebase here does this).
Image sets:
  all        every image of the split sorted by id; unannotated images are all-negative rows
             (Query2Label: torchvision CocoDetection order; 40,504 on val2014)
  annotated  only images with at least one instance (40,137 on val2014), in the order they first
             appear in the annotation list: ASL's loader order (`imgToAnns` keys), which its
             mAP depends on through the order of tied scores
"""
import contextlib
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.images import decode_problem
from harness.errors import UserError
from harness.files import file_digest
from harness.inputs.paths import what_it_is
from harness.progress import bar as progress_bar

SPLIT_SIZES = {"val2014": (40504, 40137), "train2014": (82783, 82081)}  # (all, annotated)


@dataclass
class CocoLabels:
    split: str
    image_set: str
    image_ids: np.ndarray  # int64 (N,)
    file_names: list
    labels: np.ndarray  # uint8 (N, 80)
    category_ids: list
    category_names: list
    annotation_file: Path

    def __len__(self):
        return len(self.image_ids)


def annotation_path(root, split="val2014"):
    return Path(root) / "annotations" / f"instances_{split}.json"


def labels_sha256(image_ids, labels):
    """sha256 of the int64 image ids, then the uint8 label matrix: what a run's rows were."""
    h = hashlib.sha256()
    h.update(np.asarray(image_ids).astype("<i8").tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    return h.hexdigest()


def read_instances(ann_file):
    """The parsed instances json, checked once up front: a damaged or foreign file is one line
    naming the file and what is wrong, never a traceback from pycocotools or a silent empty set."""
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad_annotations(ann_file, f"not JSON: {' '.join(str(e).split())[:120]}")
    problem = instances_problem(data)
    if problem:
        raise _bad_annotations(ann_file, problem)
    return data


def instances_problem(data):
    """What keeps `data` from being a COCO instances file (None when it is one)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object with images, annotations and categories"
    lists = {k: data.get(k) for k in ("images", "annotations", "categories")}
    absent = [k for k, v in lists.items() if not isinstance(v, list)]
    if absent:
        return f"no {' or '.join(absent)} list (is it a COCO instances file?)"
    if not lists["categories"] or not lists["images"]:
        return "its images or categories list is empty"
    def ids(items, keys):
        bad = next((x for x in items if not isinstance(x, dict) or any(k not in x for k in keys)), None)
        return bad, {x["id"] for x in items if isinstance(x, dict) and "id" in x}
    bad, categories = ids(lists["categories"], ("id", "name"))
    if bad is not None:
        return f"a category without id and name: {str(bad)[:80]}"
    bad, images = ids(lists["images"], ("id", "file_name"))
    if bad is not None:
        return f"an image without id and file_name: {str(bad)[:80]}"
    for ann in lists["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            return f"an annotation without image_id and category_id: {str(ann)[:80]}"
        if ann["category_id"] not in categories:
            return f"annotation {ann.get('id', '?')} has category id {ann['category_id']!r}, which is not in its categories"
        if ann["image_id"] not in images:
            return f"annotation {ann.get('id', '?')} names image id {ann['image_id']!r}, which is not in its images"
    return None


def _bad_annotations(ann_file, problem):
    return UserError(f"{ann_file} is not a usable COCO instances file ({problem}); replace it with the one from "
                     f"annotations_trainval2014.zip (`harness data coco --root DIR --download` after deleting it)")


def _load_coco(ann_file):
    from pycocotools.coco import COCO  # lazy: a second to import, and only a few paths need it

    coco = COCO()  # built from the checked data: the file is read once
    coco.dataset = read_instances(ann_file)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def load_labels(root, split="val2014", image_set="all"):
    """Read `<root>/annotations/instances_<split>.json` into a CocoLabels."""
    ann_file = annotation_path(root, split)
    kind = what_it_is(root)
    if kind not in ("a folder", "missing"):
        raise UserError(f"COCO root {root} is {kind or 'a file'}, not a folder; pass the folder holding "
                        f"annotations/ and {split}/")
    if not ann_file.is_file():
        raise UserError(
            f"COCO annotations not found: {ann_file}; get them with "
            f"`harness data coco --root {root} --download` (or place instances_{split}.json there)"
        )
    if image_set not in ("all", "annotated"):
        raise UserError(f"unknown image set '{image_set}'; use 'all' or 'annotated'")
    coco = _load_coco(ann_file)
    category_ids = sorted(coco.cats)
    column = {cid: j for j, cid in enumerate(category_ids)}
    image_ids = sorted(coco.imgs)
    if image_set == "annotated":  # pycocotools fills imgToAnns in annotation order
        image_ids = [i for i, anns in coco.imgToAnns.items() if anns]
    labels = np.zeros((len(image_ids), len(category_ids)), dtype=np.uint8)
    for row, image_id in enumerate(image_ids):
        for ann in coco.imgToAnns.get(image_id, ()):  # crowd annotations count too
            labels[row, column[ann["category_id"]]] = 1
    return CocoLabels(
        split=split,
        image_set=image_set,
        image_ids=np.asarray(image_ids, dtype=np.int64),
        file_names=[coco.imgs[i]["file_name"] for i in image_ids],
        labels=labels,
        category_ids=category_ids,
        category_names=[coco.cats[c]["name"] for c in category_ids],
        annotation_file=ann_file,
    )


def fingerprint(coco_labels):
    """What identifies the evaluated data: annotation file hash, image count, label-matrix hash."""
    return {
        "annotations_sha256": file_digest(coco_labels.annotation_file),
        "n_images": len(coco_labels),
        "labels_sha256": labels_sha256(coco_labels.image_ids, coco_labels.labels),
    }


def is_full_split(coco_labels):
    """True when the annotation file is the real, complete COCO split (by its image counts)."""
    expected_all, expected_annotated = SPLIT_SIZES.get(coco_labels.split, (None, None))
    expected = expected_all if coco_labels.image_set == "all" else expected_annotated
    return len(coco_labels) == expected


def check_images(root, coco_labels, show=3):
    """Fail with one line when images listed in the annotations are missing on disk."""
    folder = Path(root) / coco_labels.split
    missing = [n for n in coco_labels.file_names if not (folder / n).is_file()]
    if missing:
        first = ", ".join(missing[:show])
        raise UserError(
            f"{len(missing)} of {len(coco_labels)} {coco_labels.split} images are missing under {folder} "
            f"(first: {first}); get them with `harness data coco --root {root} --download`"
        )


def unreadable_images(root, coco_labels, progress=True):
    """[(file name, reason)] of every listed image that the loader could not decode (reads them all)."""
    folder = Path(root) / coco_labels.split
    names = coco_labels.file_names
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:  # decoding releases the GIL
        problems = list(progress_bar(len(names), f"decoding {coco_labels.split}", enabled=progress,
                                     iterable=pool.map(lambda n: decode_problem(folder / n), names)))
    return [(name, why) for name, why in zip(names, problems) if why]
