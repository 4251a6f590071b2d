"""What programs read: records and the report JSON hold to the JSON Schemas the package ships, the
report JSON names its schema, harness version and commit and is valid JSON always (no NaN), the CSV
has the CI in two columns beside the run's conditions, and `models --format json` never prints NaN."""
import csv
import io
import json
from importlib import resources

import numpy as np
import pytest
from conftest import tiny_manifest
from fake_records import eval_record, problem
from torch import nn

from harness import records, report
from harness.cli import main
from harness.manifest import DEFAULT_MANIFEST, load_manifest
from harness.models import register_model

SPECS = load_manifest()


def _schema(package, name):
    return json.loads(resources.files(package).joinpath(name).read_text())


def _validator(package, name):
    jsonschema = pytest.importorskip("jsonschema")  # dev extra
    schema = _schema(package, name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@register_model
def tiny_schema_net(num_classes=80, **_):
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, num_classes))


@pytest.fixture
def runs(tmp_path):
    """A q2l-r101-448 eval run (on a GPU, torch 2.11, CUDA 13.0) and a bench of the same model."""
    root = tmp_path / "runs"
    _, labels = problem(150, 5, seed=1)
    scores = np.random.default_rng(1).random(labels.shape).astype(np.float32)
    run_dir = records.new_run_dir(root, "q2l-r101-448")
    rec = eval_record(run_dir, scores, labels, finished_at="2026-03-04T05:06:07+00:00")
    rec["environment"].update(torch="2.11.0+cu130", cuda="13.0")
    records.write_record(run_dir, rec)
    bench_dir = records.new_run_dir(root, "q2l-r101-448")
    records.write_record(bench_dir, {
        "schema": 1, "kind": "bench", "run_id": bench_dir.name, "model": {"id": "q2l-r101-448"},
        "bench": {"params": 193_500_000, "gflops": 140.2, "results": [{"batch_size": 1, "images_per_s": 60.0}]},
        "measurement": {}, "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:10:00+00:00",
        "smoke": True})
    return root, rec


def test_the_schemas_ship_with_the_package_and_name_their_versions():
    record, rendered = _schema("harness.records", "record.schema.json"), _schema("harness.report", "report.schema.json")
    assert max(record["properties"]["schema"]["enum"]) == records.SCHEMA  # older ones stay readable
    assert rendered["properties"]["schema"]["const"] == report.render.__globals__["REPORT_SCHEMA"]


def test_records_of_a_real_run_and_of_the_fixtures_hold_to_the_record_schema(runs, smoke_root, tmp_path):
    validator = _validator("harness.records", "record.schema.json")
    manifest = tiny_manifest(tmp_path, "tiny-schema", {"name": "tiny_schema_net", "num_classes": 80}, resolution=32,
                             batch_size=8)
    assert main(["eval", "tiny-schema", "--manifest", str(manifest), "--coco-root", str(smoke_root), "--weights",
                 "random", "--runs", str(tmp_path / "evals"), "--workers", "0", "-q"]) == 0
    written = [json.loads(p.read_text()) for p in (tmp_path / "evals").glob("*/*/record.json")]
    written += [json.loads(p.read_text()) for p in runs[0].glob("*/*/record.json")]
    assert len(written) == 3
    for record in written:
        validator.validate(record)
    bad = dict(written[0], kind="party")
    assert not validator.is_valid(bad) and not validator.is_valid({**written[0], "metrics": {"mAP": "84.9"}})
    assert not validator.is_valid({k: v for k, v in written[0].items() if k != "dataset"})  # an eval needs it


def test_the_report_json_names_its_schema_version_and_commit_and_holds_to_the_schema(runs):
    validator = _validator("harness.report", "report.schema.json")
    data = report.collect(runs[0], SPECS, report.load_paper_tables())
    parsed = json.loads(report.render(data, "json"))
    validator.validate(parsed)
    assert parsed["schema"] == 1 and parsed["harness_version"] == records.code_version()["harness"]
    assert parsed["git_commit"] == records.code_version()["git_commit"] and parsed["generated_at"].startswith("20")


def test_the_report_json_has_no_nan(runs):
    data = report.collect(runs[0], SPECS, {})
    data["models"][0]["mAP"] = float("nan")
    data["models"][0]["difference"] = float("inf")
    parsed = json.loads(report.render(data, "json"), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert parsed["models"][0]["mAP"] is None and parsed["models"][0]["difference"] is None


def test_the_csv_has_the_ci_in_two_columns_and_the_runs_conditions(runs):
    root, rec = runs
    data = report.collect(root, SPECS, report.load_paper_tables())
    rows = list(csv.DictReader(io.StringIO(report.render(data, "csv"))))
    row = next(r for r in rows if r["model"] == "q2l-r101-448")
    low, high = rec["metrics"]["mAP_ci95"]
    assert "ci95" not in row and float(row["ci95_low"]) == pytest.approx(low) and float(row["ci95_high"]) == high
    assert (row["params_m"], row["gflops"]) == ("193.5", "140.2")  # from the model's bench record
    assert (row["torch"], row["cuda"], row["date"]) == ("2.11.0+cu130", "13.0", "2026-03-04")
    unrun = next(r for r in rows if r["model"] == "q2l-r101-576")
    assert unrun["ci95_low"] == unrun["ci95_high"] == unrun["torch"] == ""


def test_models_json_never_prints_nan_a_nan_in_the_manifest_is_refused(tmp_path, capsys):
    path = tmp_path / "manifest.yaml"
    path.write_text(DEFAULT_MANIFEST.read_text().replace("mAP: 84.9", "mAP: .nan", 1))
    assert main(["models", "--manifest", str(path), "--format", "json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "entry 'q2l-r101-448': field 'paper.metrics.mAP' must be a number from 0 to 100" in err
