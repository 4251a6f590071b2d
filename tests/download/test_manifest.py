import csv

import pytest
from paths import REPO

from harness.errors import UserError
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import DEFAULT_MANIFEST, load_manifest, read_yaml

PAPER = REPO / "tables" / "paper"
Q2L_IDS = {"q2l-r101-448", "q2l-r101-576", "q2l-tresl-448", "q2l-tresl22k-448", "q2l-swinl-384", "q2l-cvtw24-384"}


def test_manifest_has_every_model():
    specs = load_manifest()
    assert Q2L_IDS <= set(specs)
    assert "asl-tresnetl-448" in specs
    for loss in ("an", "an-ls", "wan", "epr", "role"):
        for mode in ("linear", "fine-tuned", "linear-init"):
            spec = specs[f"mlspl-{loss}-{mode}"]
            assert not spec.released and spec.train["mode"] == mode


def test_q2l_entries_follow_the_authors_protocol():
    specs = load_manifest()
    for mid in Q2L_IDS:
        ev = specs[mid].eval
        assert (ev.image_set, ev.protocol, ev.resize, ev.batch_size) == ("all", "q2l", "squish", 16)
        assert ev.resolution == int(mid.rsplit("-", 1)[1])
        assert specs[mid].arch["img_size"] == ev.resolution
        assert ev.normalize == ("none" if "tresl" in mid else "imagenet")
        kinds = [s["type"] for s in specs[mid].files["checkpoint"].sources]
        assert kinds == ["gdrive_folder", "http"]
    asl = specs["asl-tresnetl-448"].eval
    assert (asl.image_set, asl.protocol, asl.normalize) == ("annotated", "asl", "none")


def test_asl_zoo_and_ml_decoder_entries_follow_their_validate_scripts():
    specs = load_manifest()
    for mid, precision, threshold in [("asl-tresnetm-224", "fp32", 0.8), ("asl-tresnetxl-640", "fp32", 0.8),
                                      ("mldecoder-tresnetm-224", "fp16-fused", 0.75),
                                      ("mldecoder-tresnetl-448", "fp16-fused", 0.75),
                                      ("mldecoder-tresnetxl-640", "fp16-fused", 0.75)]:
        ev = specs[mid].eval
        assert (ev.image_set, ev.protocol, ev.normalize, ev.resize) == ("annotated", "asl", "none", "squish"), mid
        assert (ev.precision, ev.f1, ev.threshold) == (precision, "asl", threshold), mid
        assert ev.resolution == specs[mid].arch["img_size"] == int(mid.rsplit("-", 1)[1]), mid
    old = specs["asl-tresnetl-448"].eval  # the entries written before these fields keep the defaults
    assert (old.precision, old.f1, old.threshold) == ("fp32", "ml-gcn", 0.5)


def _paper_rows(name):
    with open(PAPER / name) as f:
        return list(csv.DictReader(f))


def test_paper_metrics_equal_the_published_tables():
    """Every metric in the manifest is the number in tables/paper (no typo can slip in)."""
    specs = load_manifest()
    q448 = _paper_rows("q2l_coco_448.csv")
    for spec in specs.values():
        if spec.family == "mlspl":
            loss, mode = spec.train["loss"], spec.train["mode"]
            row = [r for r in _paper_rows("mlspl_coco.csv") if (r["loss"], r["mode"]) == (loss, mode)]
            expected = float(row[0]["mAP"]) if row and row[0]["mAP"] else None
            assert spec.paper_map == expected, spec.id
            continue
        if spec.paper["csv"] in ("asl_model_zoo.csv", "ml_decoder_model_zoo.csv"):  # rows named by model id
            row = [r for r in _paper_rows(spec.paper["csv"]) if r["model"] == spec.id]
            assert len(row) == 1 and spec.paper["metrics"] == {"mAP": float(row[0]["mAP"])}, spec.id
            assert spec.files["checkpoint"].sources[0]["url"] == row[0]["url"], spec.id
            continue
        if spec.family == "ctran":
            lmt, known = spec.train["use_lmt"], spec.train["known"]
            setting = ("regular" if known == 0 else "partial") if lmt else "no-LMT"
            row = [r for r in _paper_rows("ctran_coco.csv") if (r["setting"], int(r["known_labels_pct"])) == (setting, known)]
            assert len(row) == 1, spec.id
            for key, value in spec.paper["metrics"].items():
                assert value == float(row[0][key]), (spec.id, key)
            continue
        method, _, pretrain, res = [p.strip() for p in spec.paper["row"].split("(")[0].split(",")]
        row = [r for r in q448 if (r["method"], r["pretrain"], r["resolution"]) == (method, pretrain, res)]
        assert len(row) == 1, spec.id
        for key, value in spec.paper["metrics"].items():
            assert value == (float(row[0][key]) if row[0][key] else None), (spec.id, key)


def _broken(tmp_path, mutate):
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    mutate(data["models"])
    path = tmp_path / "m.yaml"
    path.write_text(dump_yaml(data))
    return path


@pytest.mark.parametrize("mutate, entry, field", [
    (lambda m: m["q2l-r101-448"]["eval"].update(resolution="big"), "q2l-r101-448", "eval.resolution"),
    (lambda m: m["q2l-swinl-384"]["eval"].pop("protocol"), "q2l-swinl-384", "eval.protocol"),
    (lambda m: m["asl-tresnetl-448"]["eval"].update(image_set="some"), "asl-tresnetl-448", "eval.image_set"),
    (lambda m: m["q2l-r101-576"]["files"]["checkpoint"].update(sha256="abc"), "q2l-r101-576", "files.checkpoint.sha256"),
    (lambda m: m["q2l-tresl-448"]["files"]["config"]["sources"][1].pop("url"), "q2l-tresl-448", "files.config.sources[1].url"),
    (lambda m: m["q2l-cvtw24-384"]["paper"]["metrics"].update(mAP="91"), "q2l-cvtw24-384", "paper.metrics.mAP"),
    (lambda m: m["mlspl-role-linear"]["train"].update(mode="frozen"), "mlspl-role-linear", "train.mode"),
    (lambda m: m["q2l-r101-448"].update(family="detr"), "q2l-r101-448", "family"),
    (lambda m: m["mldecoder-tresnetm-224"]["eval"].update(precision="fp8"), "mldecoder-tresnetm-224",
     "eval.precision"),
    (lambda m: m["asl-tresnetm-224"]["eval"].update(threshold=80), "asl-tresnetm-224", "eval.threshold"),
])
def test_broken_manifest_names_entry_and_field(tmp_path, mutate, entry, field):
    with pytest.raises(UserError) as err:
        load_manifest(_broken(tmp_path, mutate))
    assert f"entry '{entry}'" in str(err.value) and f"field '{field}'" in str(err.value)


def test_unreadable_manifest_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_manifest(bad)
    with pytest.raises(UserError, match="not found"):
        load_manifest(tmp_path / "missing.yaml")
