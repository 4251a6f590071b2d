"""The files a training reads besides COCO: the authors' training log from their Seafile share (the folder
listed, the file chosen by name) or placed by hand, parsed into the recipe and only then locked."""
import json

import pytest
import yaml
from download_helpers import isolated, server  # noqa: F401 (fixtures)
from loopback_server import file_route, send

from harness.download import fetch
from harness.errors import UserError
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import DEFAULT_MANIFEST, get_spec, read_yaml
from harness.q2l.files import training_log_spec
from harness.q2l.recipe import load_recipe

LOG = (b"[09/16 10:02:11.339]: Command: main_mlc.py --backbone resnet101 --img_size 448 -b 128 --lr 1e-4 --amp "
       b"--early-stop --dtgfl --cutout --epochs 60\n[09/16 10:02:11.341]: world size: 2\n")


def _manifest(tmp_path, server_url):
    """The repository's manifest with the training log of q2l-r101-448 on the loopback share."""
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    source = data["training_logs"]["q2l-r101-448"]["sources"][0]
    source["server"] = server_url
    data["models"]["q2l-r101-448"]["files"] = {}  # no config_new.json here: the log decides
    data["models"]["q2l-r101-448"]["released"] = False
    path = tmp_path / "manifest.yaml"
    path.write_text(dump_yaml(data))
    return path


def _listing(names):
    body = json.dumps({"dirent_list": [{"file_name": n, "is_dir": False} for n in names]}).encode()
    return lambda h, query: send(h, body, content_type="application/json")


def test_the_log_is_found_in_the_share_folder_parsed_and_locked(tmp_path, server):
    share = "a1560cd327dc45d0ad8e"
    server.routes[f"/api/v2.1/share-links/{share}/dirents/"] = _listing(["Q2L-R101-448.txt", "Q2L-SwinL-384.txt"])
    server.routes[f"/d/{share}/files/"] = file_route(LOG, content_type="text/plain")
    spec = get_spec("q2l-r101-448", _manifest(tmp_path, server.url))
    recipe = load_recipe(spec)
    assert (recipe["batch_size"], recipe["epochs"], recipe.world_size) == (128, 60, 2)
    assert recipe.sources["epochs"] == "training log Command:"
    assert server.queries(f"/d/{share}/files/")[-1]["p"] == "/Q2L-logs/Q2L-R101-448.txt"
    lock = yaml.safe_load((tmp_path / "weights_manifest.lock.yaml").read_text())
    assert lock["q2l-r101-448"]["train_log"]["sha256"]


def test_a_folder_without_one_matching_file_leaves_a_note_and_the_readme_decides(tmp_path, server):
    share = "a1560cd327dc45d0ad8e"
    server.routes[f"/api/v2.1/share-links/{share}/dirents/"] = _listing(["Q2L-SwinL-384.txt"])
    recipe = load_recipe(get_spec("q2l-r101-448", _manifest(tmp_path, server.url)))
    assert recipe["batch_size"] == 64 and recipe.sources["batch_size"].startswith("README")
    assert any("none file named like 'R101-448'" in n for n in recipe.notes)


def test_a_hand_placed_log_of_another_model_is_refused_and_not_locked(tmp_path, server, monkeypatch):
    monkeypatch.setenv("HARNESS_OFFLINE", "1")
    placed = tmp_path / "weights" / "q2l-r101-448"
    placed.mkdir(parents=True)
    (placed / "train_log.txt").write_bytes(LOG.replace(b"resnet101", b"swin_L_384_22k"))
    spec = get_spec("q2l-r101-448", _manifest(tmp_path, server.url))
    with pytest.raises(UserError, match="belongs to another model"):
        load_recipe(spec, weights_dir=tmp_path / "weights")
    assert not (tmp_path / "weights_manifest.lock.yaml").exists()


def test_a_page_that_is_no_log_is_refused_by_its_content(tmp_path, server):
    share = "a1560cd327dc45d0ad8e"
    server.routes[f"/api/v2.1/share-links/{share}/dirents/"] = _listing(["Q2L-R101-448.txt"])
    server.routes[f"/d/{share}/files/"] = file_route(b"Please log in", content_type="text/plain")
    spec = training_log_spec(get_spec("q2l-r101-448", _manifest(tmp_path, server.url)))
    with pytest.raises(UserError, match="not a main_mlc.py training log"):
        fetch(spec, "train_log", quiet=True, lock=False)
