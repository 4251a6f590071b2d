"""The label file their training reads (data/coco/train_label_vectors_coco14.npy): fetched from their
repository at 55eb050, verified by its git object id, compared with instances_train2014.json, and
used by a training where it differs, as the val file is for evaluation (tests/data/test_authors_labels.py)."""
import hashlib

import numpy as np
import pytest
from authors_label_files import as_authors_saved
from download_helpers import isolated, server  # noqa: F401  (fixtures: loopback server, fresh cache)
from loopback_server import file_route
from tiny_release import make_release

from harness.cli import main
from harness.data.authors_labels import TRAIN_USE, choose_train_labels
from harness.data.coco import load_labels
from harness.errors import UserError
from harness.files import git_blob_id
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import load_manifest, read_yaml

PINNED = "https://raw.githubusercontent.com/SlongLiu/query2labels/55eb05064f4badbe03423b79e5c9d143da2dff2e/"


def served_spec(tmp_path, server, body, git_blob="same"):
    """The tiny release's entry, its train label file served by the loopback server."""
    manifest, _ = make_release(tmp_path)
    data = read_yaml(manifest.read_text())
    (tmp_path / "theirs.npy").write_bytes(body)
    server.routes["/train.npy"] = file_route(body)
    ref = data["reference_files"]["q2l-train-labels"]
    ref["sources"] = [{"type": "http", "url": server.url + "/train.npy"}]
    ref["git_blob"] = git_blob_id(tmp_path / "theirs.npy") if git_blob == "same" else git_blob
    manifest.write_text(dump_yaml(data))
    return load_manifest(manifest)["tiny-q2l"]


def test_every_q2l_entry_names_their_train_file_at_the_pinned_commit():
    specs = [s for s in load_manifest().values() if s.family == "q2l"]
    assert specs and all(s.train == {"authors_labels": "q2l-train-labels"} for s in specs)
    ref = specs[0].references["q2l-train-labels"]
    assert ref.git_blob == "4f8e383d6e84d1e8673fa5486ab45c5a5f2cdc98"
    assert [s["url"] for s in ref.sources] == [PINNED + "data/coco/train_label_vectors_coco14.npy"]


def test_a_changed_row_is_reported_and_training_uses_their_file(tmp_path, server, coco, capsys):
    json_labels = load_labels(coco, "train2014", "all").labels
    theirs = json_labels.copy()
    theirs[7] = 1 - theirs[7]
    spec = served_spec(tmp_path, server, as_authors_saved(theirs))
    choice = choose_train_labels(spec, coco, load_labels(coco, "train2014", "all"))
    check = choice.record["check"]
    assert check["status"] == "differ" and check["first_rows_differ"] == [7] and TRAIN_USE in check["message"]
    assert choice.record["used"] == "authors' file" and np.array_equal(choice.labels, theirs)
    lock = read_yaml((tmp_path / "weights_manifest.lock.yaml").read_text())
    assert lock["q2l-train-labels"]["labels"]["sha256"] == choice.record["authors_file"]["sha256"]
    assert "1 of 48 label rows differ" in capsys.readouterr().err


def test_equal_labels_keep_the_json_ones(tmp_path, server, coco):
    labels = load_labels(coco, "train2014", "all")
    choice = choose_train_labels(served_spec(tmp_path, server, as_authors_saved(labels.labels)), coco, labels)
    assert choice.record["used"] == "instances json" and choice.record["check"]["status"] == "equal"


def test_a_file_that_is_not_the_repositorys_is_not_used(tmp_path, server, coco, capsys):
    labels = load_labels(coco, "train2014", "all")
    spec = served_spec(tmp_path, server, as_authors_saved(1 - labels.labels), git_blob="0" * 40)
    choice = choose_train_labels(spec, coco, labels)
    assert choice.record["check"]["status"] == "unavailable" and choice.record["used"] == "instances json"
    assert "git object id" in capsys.readouterr().err


def test_the_smoke_subset_is_not_checked(tmp_path, server, smoke_root):
    spec = served_spec(tmp_path, server, as_authors_saved(np.zeros((3, 80))))
    choice = choose_train_labels(spec, smoke_root, load_labels(smoke_root, "train2014", "all"))
    assert choice.record["check"]["status"] == "skipped" and server.hits("/train.npy") == []


def test_download_fetches_it_by_name(tmp_path, server, capsys):
    body = as_authors_saved(np.eye(4, 80))
    spec = served_spec(tmp_path, server, body)
    assert main(["download", "q2l-train-labels", "--manifest", str(spec.manifest_path), "-q"]) == 0
    assert f"sha256 {hashlib.sha256(body).hexdigest()}" in capsys.readouterr().out


def test_a_train_reference_that_does_not_exist_is_refused(tmp_path):
    manifest, _ = make_release(tmp_path)
    data = read_yaml(manifest.read_text())
    data["models"]["tiny-q2l"]["train"]["authors_labels"] = "q2l-train-labelz"
    manifest.write_text(dump_yaml(data))
    with pytest.raises(UserError, match="train.authors_labels.*q2l-train-labelz"):
        load_manifest(manifest)
