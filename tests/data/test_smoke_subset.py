import hashlib
import json

from harness.cli import main
from harness.data.categories import COCO_CATEGORIES
from harness.data.smoke import make_smoke


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    a = make_smoke(tmp_path / "a", n_val=8, n_train=4, seed=3)
    b = make_smoke(tmp_path / "b", n_val=8, n_train=4, seed=3)
    c = make_smoke(tmp_path / "c", n_val=8, n_train=4, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_smoke_subset_is_coco_shaped(smoke_root):
    for split, n in (("val2014", 24), ("train2014", 48)):
        data = json.loads((smoke_root / "annotations" / f"instances_{split}.json").read_text())
        assert [(c["id"], c["name"]) for c in data["categories"]] == [(i, n_) for i, n_, _ in COCO_CATEGORIES]
        assert len(data["images"]) == n
        for im in data["images"]:
            assert im["file_name"] == f"COCO_{split}_{im['id']:012d}.jpg"
            assert (smoke_root / split / im["file_name"]).is_file()
            assert 360 <= min(im["width"], im["height"]) and max(im["width"], im["height"]) <= 640
        ids = [im["id"] for im in data["images"]]
        assert sorted(ids, key=str) != sorted(ids)  # string order differs from numeric order
    val = json.loads((smoke_root / "annotations" / "instances_val2014.json").read_text())
    train = json.loads((smoke_root / "annotations" / "instances_train2014.json").read_text())
    assert not {i["id"] for i in val["images"]} & {i["id"] for i in train["images"]}


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["data", "smoke", "--out", str(out), "--images", "4", "--train-images", "0"]) == 0
    before = _digest(out)
    assert main(["data", "smoke", "--out", str(out), "--images", "6"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _digest(out) == before
