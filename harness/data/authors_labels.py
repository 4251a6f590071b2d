"""The label files the authors' evaluation and training read, checked against the labels built from the json.

Query2Label's loader reads `data/coco/val_label_vectors_coco14.npy` (committed in their repository,
binarised with `> 0`) whenever it exists, and builds labels from instances_val2014.json only when it
does not: their published mAP was computed against that file. So on every run of a model whose
manifest entry names such a file (`eval.authors_labels`) it is fetched (verified like the weights)
and compared with the json labels: rows, order and values. When they differ, the metrics use the
authors' file (that is what their number means) and the record gives the json-label mAP beside it.
Their training reads `data/coco/train_label_vectors_coco14.npy` the same way (`train.authors_labels`):
`choose_train_labels` checks it against instances_train2014.json alike, and training uses the
authors' file where they differ (what their runs learnt from).
The smoke subset is not checked (the files are for the real val2014 and train2014).
"""
import logging
from dataclasses import dataclass, field

import numpy as np

from harness.data.smoke import is_smoke_root
from harness.download import fetch
from harness.download.verify import read_record, unchanged_since
from harness.errors import UserError
from harness.files import file_digest
from harness.manifest import ModelSpec
from harness.metrics import compute_metrics
from harness.records.arrays import load_array

logger = logging.getLogger(__name__)


@dataclass
class LabelChoice:
    labels: np.ndarray  # uint8 N x C: the labels the metrics use
    record: dict  # the run record's `labels` section
    json_labels: np.ndarray = field(repr=False, default=None)

    def summary(self, scores, protocol):
        """The record section; with the json-label mAP when the labels used differ from the json's."""
        out = dict(self.record)
        n = len(scores)
        if self.record["used"] == "authors' file" and not np.array_equal(self.labels[:n], self.json_labels[:n]):
            out["json_labels_mAP"] = compute_metrics(scores, self.json_labels[:n], protocol, ci=False)["mAP"]
        return out


def reference_spec(spec, ref_id):
    """A manifest-like entry for one reference file, so that it is fetched, cached and locked as weights are."""
    return ModelSpec(id=ref_id, family=spec.family, description="", arch={}, paper={}, released=True,
                     files={"labels": spec.references[ref_id]}, eval=None, manifest_path=spec.manifest_path)


def fetch_authors_labels(spec, ref_id=None, **options):
    """The verified local path of the label file `ref_id` (default: the one `spec`'s evaluation names;
    options: those of download.fetch)."""
    return fetch(reference_spec(spec, ref_id or spec.eval.authors_labels), "labels", **options)


def read_label_file(path):
    """The authors' label matrix as their loader reads it: `np.load(...) > 0`."""
    try:
        values = load_array(path, "authors' labels", kinds="biuf")  # header and size checked before reading
    except UserError as e:
        raise UserError(f"{path} is not a readable .npy label file ({e}); delete it and run again")
    if values.ndim != 2:
        raise UserError(f"{path} holds an array of shape {values.shape}, not images x classes; delete it and run again")
    return (values > 0).astype(np.uint8)


EVAL_USE = "metrics use the authors' file, the json-label mAP is given beside it"
TRAIN_USE = "training learns from the authors' file, as theirs did"


def compare(authors, json_labels, use=EVAL_USE):
    """Rows, order and values of the authors' labels against the json's: the record's `check` (`use`:
    what the run does with the authors' file when they differ)."""
    check = {"rows_authors_file": int(authors.shape[0]), "rows_json": int(json_labels.shape[0])}
    if authors.shape != json_labels.shape:
        return {**check, "status": "shape differs",
                "message": f"the authors' label file is {authors.shape[0]} x {authors.shape[1]}, the json labels "
                           f"{json_labels.shape[0]} x {json_labels.shape[1]}: not comparable, json labels used"}
    differ = np.flatnonzero((authors != json_labels).any(1))
    check["rows_differ"] = int(len(differ))
    check["first_rows_differ"] = differ[:10].tolist()
    if not len(differ):
        return {**check, "status": "equal", "message": "labels equal to the authors' file"}
    rows_a, rows_j = (np.unique(x, axis=0, return_counts=True) for x in (authors, json_labels))
    reordered = all(np.array_equal(a, j) for a, j in zip(rows_a, rows_j))  # the same rows, as often each
    check["same_rows_other_order"] = bool(reordered)
    how = "the same rows in another order" if reordered else "other values"
    return {**check, "status": "differ",
            "message": f"{len(differ)} of {len(authors)} label rows differ from the authors' file ({how}); {use}"}


def choose_labels(spec, coco_root, coco_labels, *, weights_dir=None, cache_dir=None):
    """The labels this run's metrics use, and what the record says about them."""
    return _choose(spec, spec.eval.authors_labels, coco_root, coco_labels, weights_dir, cache_dir, EVAL_USE)


def choose_train_labels(spec, coco_root, coco_labels, *, weights_dir=None, cache_dir=None):
    """The train2014 labels a training of `spec` learns from (the file its `train.authors_labels` names,
    where it differs from the json's), and what the record says about them."""
    ref_id = (spec.train or {}).get("authors_labels")
    return _choose(spec, ref_id, coco_root, coco_labels, weights_dir, cache_dir, TRAIN_USE)


def _choose(spec, ref_id, coco_root, coco_labels, weights_dir, cache_dir, use):
    json_labels = coco_labels.labels
    plain = {"used": "instances json"}
    if ref_id is None:
        return LabelChoice(json_labels, {**plain, "check": None}, json_labels)
    source = {"id": ref_id, "git_blob": spec.references[ref_id].git_blob,
              "sources": [s.get("url") or str(s) for s in spec.references[ref_id].sources]}
    if is_smoke_root(coco_root):
        return LabelChoice(json_labels, {**plain, "authors_file": source, "check": {
            "status": "skipped", "message": "smoke subset: not compared with the authors' label file"}}, json_labels)
    try:
        path = fetch_authors_labels(spec, ref_id, weights_dir=weights_dir, cache_dir=cache_dir, quiet=True)
        authors = read_label_file(path)
    except UserError as e:
        logger.warning(f"warning: {spec.id}: the authors' label file could not be had, so the labels were not checked "
                       f"against it: {e}")
        return LabelChoice(json_labels, {**plain, "authors_file": source, "check": {
            "status": "unavailable", "message": f"labels not checked against the authors' file: {e}"}}, json_labels)

    cached = read_record(path)
    sha = cached["sha256"] if cached and unchanged_since(path, cached) else file_digest(path)
    source.update(path=str(path), sha256=sha)
    check = compare(authors, json_labels, use)
    if check["status"] != "differ":
        return LabelChoice(json_labels, {**plain, "authors_file": source, "check": check}, json_labels)
    logger.warning(f"{spec.id}: {check['message']}")
    return LabelChoice(authors, {"used": "authors' file", "authors_file": source, "check": check}, json_labels)
