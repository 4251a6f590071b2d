"""The authors' label file (Query2Label reads it instead of the json): fetched from its repository and
verified (git object id, then sha256 locked), compared with the json labels on every run, and used
for the metrics where it differs, with the json-label mAP beside it."""
import hashlib
import json
import subprocess

import numpy as np
import pytest
from authors_label_files import as_authors_saved
from download_helpers import isolated, server  # noqa: F401  (fixtures: loopback server, fresh cache)
from loopback_server import file_route
from tiny_release import make_release

from harness import records
from harness.cli import main
from harness.data.authors_labels import compare
from harness.data.coco import load_labels
from harness.files import git_blob_id
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import read_yaml
from harness.metrics import compute_metrics


def setup(tmp_path, server, body, git_blob=None):
    manifest, _ = make_release(tmp_path)
    data = read_yaml(manifest.read_text())
    ref = data["reference_files"]["q2l-val-labels"]
    server.routes["/labels.npy"] = file_route(body)
    ref["sources"] = [{"type": "http", "url": server.url + "/labels.npy"}]
    ref["git_blob"] = git_blob
    manifest.write_text(dump_yaml(data))
    return manifest


def evaluate(manifest, coco, runs):
    args = ["eval", "tiny-q2l", "--manifest", str(manifest), "--coco-root", str(coco), "--weights", "random",
            "--workers", "0", "--no-progress", "--out", str(runs)]
    assert main(args) == 0
    run_dir = max(runs.glob("tiny-q2l/*/"))
    return run_dir, json.loads((run_dir / "record.json").read_text())


def test_one_changed_row_is_reported_and_the_authors_file_scores(tmp_path, server, coco, capsys):
    json_labels = load_labels(coco, "val2014", "all").labels
    theirs = json_labels.copy()
    theirs[5] = 1 - theirs[5]  # one row changed
    body = as_authors_saved(theirs)
    (tmp_path / "theirs.npy").write_bytes(body)
    manifest = setup(tmp_path, server, body, git_blob=git_blob_id(tmp_path / "theirs.npy"))

    run_dir, record = evaluate(manifest, coco, tmp_path / "runs")
    check = record["labels"]["check"]
    assert check["status"] == "differ" and check["rows_differ"] == 1 and check["first_rows_differ"] == [5]
    assert record["labels"]["used"] == "authors' file" and "1 of 24 label rows differ" in check["message"]
    scores = np.load(run_dir / "scores.npy")
    np.testing.assert_array_equal(np.load(run_dir / "labels.npy"), theirs)
    assert record["metrics"]["mAP"] == compute_metrics(scores, theirs, "q2l", ci=False)["mAP"]
    assert record["labels"]["json_labels_mAP"] == compute_metrics(scores, json_labels, "q2l", ci=False)["mAP"]
    assert record["labels"]["json_labels_mAP"] != record["metrics"]["mAP"]
    lock = read_yaml((tmp_path / "weights_manifest.lock.yaml").read_text())
    assert lock["q2l-val-labels"]["labels"]["sha256"] == record["labels"]["authors_file"]["sha256"]

    hits = len(server.hits("/labels.npy"))
    evaluate(manifest, coco, tmp_path / "runs")  # the next run takes the verified cached copy
    assert len(server.hits("/labels.npy")) == hits

    from harness.manifest import load_manifest
    from harness.report import footnotes, model_row

    row = model_row(load_manifest(manifest)["tiny-q2l"], records.read_record(run_dir), {})
    assert any("1 of 24 label rows differ" in n for n in footnotes("q2l", [row]))


def test_equal_labels_say_so(tmp_path, server, coco):
    body = as_authors_saved(load_labels(coco, "val2014", "all").labels)
    _, record = evaluate(setup(tmp_path, server, body), coco, tmp_path / "runs")
    assert record["labels"]["used"] == "instances json" and "json_labels_mAP" not in record["labels"]
    assert record["labels"]["check"]["message"] == "labels equal to the authors' file"


def test_a_file_that_is_not_the_repositorys_is_never_locked(tmp_path, server, coco, capsys):
    body = as_authors_saved(load_labels(coco, "val2014", "all").labels)
    _, record = evaluate(setup(tmp_path, server, body, git_blob="0" * 40), coco, tmp_path / "runs")
    assert record["labels"]["check"]["status"] == "unavailable" and "git object id" in capsys.readouterr().err
    assert not (tmp_path / "weights_manifest.lock.yaml").exists() or "q2l-val-labels" not in \
        (tmp_path / "weights_manifest.lock.yaml").read_text()


def test_smoke_subset_is_not_checked(tmp_path, server, smoke_root):
    body = as_authors_saved(np.zeros((3, 80)))
    _, record = evaluate(setup(tmp_path, server, body), smoke_root, tmp_path / "runs")
    assert record["labels"]["check"]["status"] == "skipped" and server.hits("/labels.npy") == []


def test_compare_rows_order_and_shape():
    labels = (np.random.default_rng(0).random((30, 5)) < 0.4).astype(np.uint8)
    assert compare(labels[::-1].copy(), labels)["same_rows_other_order"] is True
    assert compare(labels[:-1], labels)["status"] == "shape differs"


def test_git_blob_id_is_gits(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(as_authors_saved(np.eye(3)))
    try:
        theirs = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not installed")
    assert git_blob_id(path) == theirs.strip()


def test_download_fetches_it_by_name_and_with_each_q2l_model(tmp_path, server, capsys):
    body = as_authors_saved(np.eye(4, 80))
    manifest = setup(tmp_path, server, body)
    data = read_yaml(manifest.read_text())
    for wfile in data["models"]["tiny-q2l"]["files"].values():
        wfile["sources"] = [{"type": "http", "url": server.url + "/missing"}]
    manifest.write_text(dump_yaml(data))
    assert main(["download", "q2l-val-labels", "--manifest", str(manifest), "-q"]) == 0
    out = capsys.readouterr().out
    assert "q2l-val-labels  labels" in out and f"sha256 {hashlib.sha256(body).hexdigest()}" in out
    assert main(["download", "tiny-q2l", "--manifest", str(manifest), "-q"]) == 2  # its checkpoint has no server
    assert "q2l-val-labels  labels" in capsys.readouterr().out  # but the label file came with it
