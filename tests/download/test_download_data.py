"""The MLSPL features from a loopback Zenodo records API, and COCO 2014 archives from a loopback host."""
import hashlib
import io
import json
import zipfile

import pytest
from download_helpers import isolated, make_spec, server, sha  # noqa: F401 (fixtures)
from loopback_server import add_zenodo_record, file_route, send

from harness.download import coco, features_dir, fetch, fetch_coco, fetch_mlspl_features
from harness.errors import UserError


def zip_bytes(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


FEATURES = zip_bytes({"coco/train_features_imagenet_resnet50.npy": b"\x93NUMPY fake",
                      "coco/val_features_imagenet_resnet50.npy": b"\x93NUMPY fake too"})


@pytest.fixture
def zenodo(server, monkeypatch):
    monkeypatch.setenv("HARNESS_ZENODO_API", server.url + "/api")
    return server


def test_features_fetched_verified_and_unpacked(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES, "pascal.zip": b"not wanted"})
    [path] = fetch_mlspl_features(quiet=True)
    assert path == features_dir() / "coco.zip" and path.read_bytes() == FEATURES
    assert (features_dir() / "coco" / "train_features_imagenet_resnet50.npy").read_bytes() == b"\x93NUMPY fake"
    assert not zenodo.hits("/api/records/10162606/files/pascal.zip/content")
    fetch_mlspl_features(quiet=True)
    assert len(zenodo.hits("/api/records/10162606/files/coco.zip/content")) == 1  # cached
    zenodo.close()
    assert fetch_mlspl_features(offline=True) == [path]  # offline: checked against the saved listing


def test_features_md5_mismatch_is_refused(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES}, bad_md5={"coco.zip"})
    with pytest.raises(UserError, match="does not match the md5.*moved to .*coco.zip.corrupt-"):
        fetch_mlspl_features(quiet=True)
    assert not (features_dir() / "coco.zip").exists()


def test_features_offline_before_any_download(zenodo):
    with pytest.raises(UserError, match="offline: the MLSPL features were never downloaded"):
        fetch_mlspl_features(offline=True)
    assert zenodo.log == []


def test_zenodo_source_in_the_manifest(tmp_path, zenodo):
    add_zenodo_record(zenodo, "42", {"weights.pth": b"w" * 1000})
    spec = make_spec(tmp_path, {"checkpoint": {"filename": "weights.pth", "sha256": sha(b"w" * 1000),
                                               "sources": [{"type": "zenodo", "record": "42", "key": "weights.pth"}]}})
    assert fetch(spec, "checkpoint", quiet=True).read_bytes() == b"w" * 1000
    missing = make_spec(tmp_path, {"checkpoint": {"filename": "x.pth", "sha256": None,
                                                  "sources": [{"type": "zenodo", "record": "42", "key": "x.pth"}]}})
    with pytest.raises(UserError, match="has no file 'x.pth' .*weights.pth"):
        fetch(missing, "checkpoint", quiet=True)


def test_cli_features_target(zenodo, capsys):
    from harness.cli import main
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES})
    assert main(["download", "mlspl-features", "-q"]) == 0
    assert str(features_dir() / "coco.zip") in capsys.readouterr().out


def test_complete_cache_needs_no_network(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES, "coco_labels.npy": b"labels"})
    paths = fetch_mlspl_features(quiet=True)
    zenodo.close()  # online, but Zenodo is out of reach: the verified cache is enough
    assert fetch_mlspl_features(quiet=True) == paths
    assert [p for p, _, _ in zenodo.log].count("/api/records/10162606") == 1


def test_only_what_is_missing_goes_online(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES, "coco_labels.npy": b"labels"})
    fetch_mlspl_features(quiet=True)
    fetch_mlspl_features(quiet=True)  # complete: no request at all
    (features_dir() / "coco_labels.npy").unlink()
    fetch_mlspl_features(quiet=True)
    assert (features_dir() / "coco_labels.npy").read_bytes() == b"labels"
    assert len(zenodo.hits("/api/records/10162606")) == 2
    assert len(zenodo.hits("/api/records/10162606/files/coco_labels.npy/content")) == 2
    assert len(zenodo.hits("/api/records/10162606/files/coco.zip/content")) == 1


def test_damaged_listing(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES})
    [path] = fetch_mlspl_features(quiet=True)
    listing = features_dir() / "zenodo-10162606.json"
    listing.write_text('{"coco.zip": {"key": "coco.zi')  # cut short
    with pytest.raises(UserError) as err:
        fetch_mlspl_features(offline=True)
    assert str(listing) in str(err.value) and "delete it" in str(err.value) and "\n" not in str(err.value)
    assert fetch_mlspl_features(quiet=True) == [path]  # online: replaced by a fresh listing
    assert json.loads(listing.read_text())["coco.zip"]["key"] == "coco.zip"


def test_archive_that_does_not_unpack(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.zip": b"PK\x03\x04 not really a zip"})
    with pytest.raises(UserError, match=r"cannot unpack .*coco.zip .*delete it"):
        fetch_mlspl_features(quiet=True)


def test_disk_full_while_unpacking(zenodo, monkeypatch):
    import errno
    import shutil
    add_zenodo_record(zenodo, "10162606", {"coco.zip": FEATURES})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(shutil, "unpack_archive", full)
    with pytest.raises(UserError, match="disk full .*free some space"):
        fetch_mlspl_features(quiet=True)
    assert not (features_dir() / "coco.zip.unpacked").exists()  # unpacked on the next run


def tar_gz(members):
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.skipif(not hasattr(__import__("tarfile"), "data_filter"), reason="Python without tar filters")
def test_tar_members_stay_inside_the_folder(zenodo):
    add_zenodo_record(zenodo, "10162606", {"coco.tar.gz": tar_gz({"coco/val.npy": b"ok"}),
                                           "coco_evil.tar.gz": tar_gz({"../../evil.txt": b"gotcha"})})
    with pytest.raises(UserError, match="cannot unpack .*coco_evil.tar.gz"):
        fetch_mlspl_features(quiet=True)
    assert (features_dir() / "coco" / "val.npy").read_bytes() == b"ok"
    assert not (features_dir().parent.parent / "evil.txt").exists()  # where ../../ would have put it


# --- COCO ---------------------------------------------------------------------------------------

VAL_NAMES = [f"COCO_val2014_{i:012d}.jpg" for i in (42, 73, 74)]


def annotations_zip():
    def instances(names):
        return json.dumps({"images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
                           "annotations": [], "categories": []})
    return zip_bytes({"annotations/instances_val2014.json": instances(VAL_NAMES),
                      "annotations/instances_train2014.json": instances(["COCO_train2014_000000000009.jpg"])})


@pytest.fixture
def coco_host(server, monkeypatch):
    """Serve the archives under /coco/ with their md5 in place of the real ones."""
    monkeypatch.setenv("HARNESS_COCO_URL", server.url + "/coco")

    def publish(part, data):
        remote, _ = coco.COCO_ZIPS[part]
        server.routes[f"/coco/{remote}"] = file_route(data)
        monkeypatch.setitem(coco.COCO_ZIPS, part, (remote, hashlib.md5(data).hexdigest()))
        return f"/coco/{remote}"
    server.publish = publish
    return server


def test_coco_fetch_unpack_count_and_rerun(tmp_path, coco_host):
    coco_host.publish("annotations", annotations_zip())
    val = coco_host.publish("val2014", zip_bytes({f"val2014/{n}": b"jpeg" for n in VAL_NAMES}))
    out = fetch_coco(tmp_path / "coco", quiet=True)
    assert out["val2014"] == tmp_path / "coco" / "val2014"
    assert sorted(p.name for p in out["val2014"].iterdir()) == VAL_NAMES
    assert (out["annotations"] / "instances_val2014.json").is_file()
    assert not [p for p in (tmp_path / "coco" / "downloads").iterdir() if p.suffix != ".lock"]  # zips removed
    n = len(coco_host.log)
    fetch_coco(tmp_path / "coco", quiet=True)  # complete parts are skipped
    assert len(coco_host.log) == n
    (out["val2014"] / VAL_NAMES[0]).unlink()  # a part made incomplete is fetched again
    fetch_coco(tmp_path / "coco", quiet=True)
    assert len(coco_host.hits(val)) == 2 and (out["val2014"] / VAL_NAMES[0]).is_file()


def test_coco_incomplete_archive_is_reported(tmp_path, coco_host):
    coco_host.publish("annotations", annotations_zip())
    coco_host.publish("val2014", zip_bytes({f"val2014/{n}": b"jpeg" for n in VAL_NAMES[:2]}))
    with pytest.raises(UserError, match=r"val2014: 1 of the 3 images .* still missing"):
        fetch_coco(tmp_path / "coco", quiet=True)


def test_coco_wrong_md5_is_refused(tmp_path, coco_host, monkeypatch):
    coco_host.publish("annotations", annotations_zip())
    monkeypatch.setitem(coco.COCO_ZIPS, "annotations", (coco.COCO_ZIPS["annotations"][0], "0" * 32))
    with pytest.raises(UserError, match="does not match the md5.*corrupt-"):
        fetch_coco(tmp_path / "coco", splits=("annotations",), quiet=True)
    assert not (tmp_path / "coco" / "annotations").exists()


def test_coco_offline_names_what_is_missing(tmp_path, coco_host):
    with pytest.raises(UserError, match="offline: COCO annotations is missing"):
        fetch_coco(tmp_path / "coco", offline=True)
    assert coco_host.log == []
    with pytest.raises(UserError, match="unknown COCO part"):
        fetch_coco(tmp_path / "coco", splits=("val2017",))


def instances_json(names, tag="by hand"):
    return json.dumps({"info": {"description": tag}, "annotations": [], "categories": [],
                       "images": [{"id": i, "file_name": n} for i, n in enumerate(names)]})


def place_by_hand(root, val=True, train=True):
    (root / "annotations").mkdir(parents=True)
    if val:
        (root / "annotations" / "instances_val2014.json").write_text(instances_json(VAL_NAMES))
    if train:
        (root / "annotations" / "instances_train2014.json").write_text(instances_json([]))


def test_coco_annotations_unpacked_by_hand_are_used(tmp_path, coco_host):
    root = tmp_path / "coco"
    place_by_hand(root)
    (root / "val2014").mkdir()
    for n in VAL_NAMES:
        (root / "val2014" / n).write_bytes(b"jpeg")
    assert fetch_coco(root, offline=True, quiet=True)["annotations"] == root / "annotations"
    assert coco_host.log == [] and (root / "annotations" / ".harness-complete").is_file()
    ann = coco_host.publish("annotations", annotations_zip())  # online too: nothing fetched, nothing replaced
    (root / "annotations" / ".harness-complete").unlink()
    fetch_coco(root, quiet=True)
    assert coco_host.hits(ann) == []
    assert "by hand" in (root / "annotations" / "instances_val2014.json").read_text()


def test_coco_missing_annotation_fetched_without_touching_the_other(tmp_path, coco_host):
    root = tmp_path / "coco"
    place_by_hand(root, train=False)
    coco_host.publish("annotations", annotations_zip())
    fetch_coco(root, splits=("annotations",), quiet=True)
    assert "by hand" in (root / "annotations" / "instances_val2014.json").read_text()
    assert "COCO_train2014_000000000009.jpg" in (root / "annotations" / "instances_train2014.json").read_text()
    assert not [p for p in (root / "downloads").iterdir() if p.suffix != ".lock"]  # no leftovers of the unpacking


def test_coco_broken_annotation_by_hand_is_named_and_kept(tmp_path, coco_host):
    root = tmp_path / "coco"
    place_by_hand(root)
    broken = root / "annotations" / "instances_val2014.json"
    broken.write_text('{"images": [')
    coco_host.publish("annotations", annotations_zip())
    with pytest.raises(UserError, match="instances_val2014.json is not a COCO instances file"):
        fetch_coco(root, quiet=True)
    assert broken.read_text() == '{"images": [' and coco_host.log == []


@pytest.mark.parametrize("body", [b"[]", b"<html>maintenance</html>"])
def test_a_zenodo_answer_that_is_not_a_record_is_one_line(zenodo, body):
    """A JSON list was read with .get(): an AttributeError traceback; HTML was said as not JSON."""
    from harness.download.errors import SourceError
    from harness.download.zenodo import list_record

    zenodo.routes["/api/records/7"] = lambda h, q: send(h, body, content_type="application/json")
    with pytest.raises(SourceError, match="Zenodo sent something other than"):
        list_record("7")
