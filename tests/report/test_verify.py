"""A record cannot claim what its own files do not show: each fact check of harness.report.verify holds
on an honest run and fails on a run folder whose files or record were edited afterwards, and the
report judges by the same facts (never "reproduced" for a record whose facts fail)."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
from fake_records import eval_record, full_record, problem

from harness import records, report
from harness.inputs.yaml_files import dump_yaml
from harness.manifest import load_manifest
from harness.report import recompute
from harness.report.verify import FAILED, HELD, UNCHECKED, check_run

SPECS = load_manifest()
SPEC = SPECS["q2l-r101-448"]
SHA = "ab" * 32


@pytest.fixture
def lock_file(tmp_path, monkeypatch):
    """This machine's lock file, holding the sha256 the test runs' checkpoint has."""
    path = tmp_path / "weights_manifest.lock.yaml"
    path.write_text(dump_yaml({SPEC.id: {"checkpoint": {"sha256": SHA, "size": 1, "source": "test"}}}))
    monkeypatch.setenv("HARNESS_LOCK_FILE", str(path))
    return path


@pytest.fixture
def honest(tmp_path, lock_file):
    """A smoke run that says it is one (150 images, 5 classes, the locked checkpoint): every fact holds."""
    scores, labels = problem(150, 5, seed=3)
    run_dir = records.new_run_dir(tmp_path / "runs", SPEC.id)
    rec = eval_record(run_dir, scores, labels, model_id=SPEC.id, smoke=True)
    rec["checkpoint"] = {"path": "/weights/checkpoint.pkl", "sha256": SHA, "pinned": False, "random_weights": False}
    rec["smoke_reasons"] = ["smoke subset"]
    records.write_record(run_dir, rec)
    return run_dir


def facts_of(run_dir, spec=SPEC, **options):
    return check_run(records.read_record(run_dir), spec, full=True, **options)


def outcome(facts, check):
    return next(f.outcome for f in facts.findings if f.check == check)


def edit_record(run_dir, change):
    """What an author could do to a record.json after the run."""
    data = json.loads((run_dir / "record.json").read_text())
    change(data)
    (run_dir / "record.json").write_text(json.dumps(data))


def edit_array(run_dir, name, change):
    array = change(np.load(run_dir / name))
    (run_dir / name).unlink()
    np.save(run_dir / name, array)


def test_an_honest_smoke_run_holds_and_stays_smoke(honest):
    facts = facts_of(honest)
    assert facts.verdict == "holds", [f for f in facts.findings if f.outcome != HELD]
    assert {f.check for f in facts.findings} >= {"files", "digests", "image count", "labels", "mAP", "metrics",
                                                 "checkpoint", "smoke flags", "environment"}
    assert "150 of the 40,504 images" in facts.smoke
    assert report.status_of(SPEC, records.read_record(honest), facts)[0] == "smoke"


def _flip_first_label(labels):
    labels[0, 0] = 1 - labels[0, 0]
    return labels


def _change_first_row(scores):
    scores[0] = scores[0][::-1]
    return scores


@pytest.mark.parametrize("edit, failed", [
    (lambda d: edit_array(d, "scores.npy", _change_first_row), {"digests", "mAP", "metrics"}),
    (lambda d: edit_array(d, "labels.npy", _flip_first_label), {"digests", "labels", "mAP", "metrics"}),
    (lambda d: edit_array(d, "image_ids.npy", lambda ids: ids[:-1]), {"files", "digests"}),
    (lambda d: edit_record(d, lambda r: r["metrics"].update(mAP=r["metrics"]["mAP"] + 0.01)), {"mAP"}),
    (lambda d: edit_record(d, lambda r: r["metrics"].update(CF1=r["metrics"]["CF1"] + 1)), {"metrics"}),
    (lambda d: edit_record(d, lambda r: r.update(smoke=False, smoke_reasons=[])), {"smoke flags"}),
    (lambda d: edit_record(d, lambda r: r["checkpoint"].update(sha256="cd" * 32)), {"checkpoint"}),
    (lambda d: edit_record(d, lambda r: r["digests"].pop("labels")), {"digests"}),
    (lambda d: edit_record(d, lambda r: r["dataset"].update(n_images=40504)), {"image count"}),
    (lambda d: edit_record(d, lambda r: r["environment"].update(matches_environment_file="environments/"
                                                                 "harness-py311.txt", torch="1.0.0")), {"environment"}),
], ids=["scores row changed", "label flipped", "image ids truncated", "mAP edited", "CF1 edited",
        "smoke flags cleared", "checkpoint sha swapped", "digest missing", "image count edited", "environment edited"])
def test_each_check_fails_on_a_run_folder_edited_after_the_run(honest, edit, failed):
    edit(honest)
    facts = facts_of(honest)
    assert {f.check for f in facts.failed} == failed, facts.failed
    assert facts.verdict == "failed"
    assert report.status_of(SPEC, records.read_record(honest), facts)[0] == "failed checks"


def test_a_copied_smoke_record_with_its_flags_cleared_and_the_papers_map_never_reads_reproduced(honest, tmp_path):
    copy = tmp_path / "sent" / SPEC.id / honest.name
    shutil.copytree(honest, copy)
    edit_record(copy, lambda r: (r.update(smoke=False, smoke_reasons=[]), r["dataset"].update(smoke_subset=False),
                                 r["metrics"].update(mAP=SPEC.paper_map, mAP_ci95=[84.0, 86.0])))
    data = report.collect(tmp_path / "sent", SPECS, {}, measured_root=None)
    row = next(r for r in data["models"] if r["model"] == SPEC.id)
    assert row["mAP"] == SPEC.paper_map and row["status"] == "failed checks"
    assert any(p.startswith("mAP: recomputed") for p in row["problems"])
    assert any("smoke flags: the record claims a full run, but: 150 of the 40,504 images" in p for p in row["problems"])


def test_a_whole_split_run_whose_facts_hold_is_judged_on_its_recomputed_map(tmp_path, lock_file):
    run_dir = records.new_run_dir(tmp_path / "runs", SPEC.id)
    rec = full_record(run_dir, SPEC.id, seed=4, n_boot=0, specs=SPECS)
    rec["checkpoint"]["sha256"] = SHA
    records.write_record(run_dir, rec)
    facts = facts_of(run_dir)
    assert facts.verdict == "holds" and not facts.smoke, [f for f in facts.findings if f.outcome != HELD]
    assert "the whole val2014 'all' set of 40,504 images" in next(f.why for f in facts.findings
                                                                    if f.check == "image count")
    as_paper = dataclasses.replace(SPEC, paper={**SPEC.paper, "metrics": {"mAP": rec["metrics"]["mAP"] + 0.05}})
    assert report.status_of(as_paper, records.read_record(run_dir), facts)[0] == "reproduced"
    assert report.status_of(SPEC, records.read_record(run_dir), facts)[0] == "not reproduced"
    pinned = dataclasses.replace(SPEC.files["checkpoint"], sha256="ef" * 32)  # the release is another file
    other = dataclasses.replace(as_paper, files={**SPEC.files, "checkpoint": pinned})
    facts = check_run(records.read_record(run_dir), other)  # as the report checks it: every metric held above
    assert outcome(facts, "checkpoint") == FAILED and "weights are not the pinned release" in facts.smoke
    assert report.status_of(other, records.read_record(run_dir), facts)[0] == "failed checks"


@pytest.mark.parametrize("protocol", ["q2l", "asl", "mlspl"])
def test_the_metrics_check_reuses_the_point_maps_sort_and_gets_the_same_numbers(protocol):
    scores, labels = problem(150, 5, seed=3)
    scores = np.round(scores, 1)  # ties, some of them mixed
    recorded = {"bootstrap": {"n_resamples": 20, "seed": 1}, "f1_rule": "ml-gcn", "threshold": 0.5}
    point = recompute.point_map(scores, labels, protocol)
    assert point.mixed_ties and point.per_class is not None
    shared = recompute.all_metrics(scores, labels, recorded, protocol, point=point)
    assert json.dumps(shared) == json.dumps(recompute.all_metrics(scores, labels, recorded, protocol))


def test_a_schema_1_record_is_unverifiable_not_broken(honest):
    edit_record(honest, lambda r: (r.update(schema=1), r.pop("digests")))
    record = records.read_record(honest)
    assert record.schema == 1 and record.to_json()["schema"] == 1  # read and written again, it stays schema 1
    facts = facts_of(honest)
    assert outcome(facts, "digests") == UNCHECKED and facts.verdict == "unverified" and not facts.failed
    whole = dataclasses.replace(record, smoke=False, smoke_reasons=[], dataset={**record.dataset, "smoke_subset": False})
    assert report.status_of(SPEC, whole, dataclasses.replace(facts, smoke=()))[0] == "unverifiable"


def test_labels_are_checked_against_your_own_annotations(smoke_root, tmp_path, lock_file):
    from harness.data.coco import annotation_path, fingerprint, load_labels
    from harness.files import file_digest
    from harness.report.verify import Annotations

    coco = load_labels(smoke_root, "val2014", "all")
    run_dir = records.new_run_dir(tmp_path / "runs", SPEC.id)
    scores = np.random.default_rng(0).random(coco.labels.shape).astype(np.float32)
    rec = eval_record(run_dir, scores, coco.labels, model_id=SPEC.id, smoke=True)
    np.save(run_dir / "ids.npy", coco.image_ids)  # the record's image ids must be COCO's
    (run_dir / "image_ids.npy").unlink()
    (run_dir / "ids.npy").rename(run_dir / "image_ids.npy")
    rec["digests"]["image_ids"] = file_digest(run_dir / "image_ids.npy")
    rec["dataset"]["fingerprint"] = fingerprint(coco)
    records.write_record(run_dir, rec)
    yours = Annotations(coco, file_digest(annotation_path(smoke_root)))
    assert outcome(facts_of(run_dir, annotations=yours), "annotations") == HELD
    assert outcome(facts_of(run_dir), "labels") == HELD
    other = Annotations(dataclasses.replace(coco, labels=1 - coco.labels), yours.sha256)
    assert outcome(facts_of(run_dir, annotations=other), "annotations") == FAILED
    assert outcome(facts_of(run_dir, annotations=Annotations(coco, "0" * 64)), "annotations") == FAILED


def test_the_recorded_map_may_differ_only_as_far_as_tied_scores_allow():
    """numpy's sort may order tied scores differently on another machine: the mAP such a run recorded
    lies between the two extreme tie orders; anything outside is no tie order at all."""
    rng = np.random.default_rng(1)
    labels = (rng.random((400, 6)) < 0.3).astype(np.uint8)
    scores = (np.floor(rng.random((400, 6)) * 4) + labels) / 5  # five values: positives and negatives tie
    scores = scores.astype(np.float32)
    point = recompute.point_map(scores, labels, "q2l")
    assert point.mixed_ties > 0 and point.low < point.mAP < point.high
    assert point.agrees(point.low) and point.agrees(point.high) and point.agrees(point.mAP)
    assert not point.agrees(point.high + 0.01) and not point.agrees(point.low - 0.01)
    exact = recompute.point_map(scores, labels, "mlspl")  # ties form one step: one value
    assert exact.low == exact.mAP == exact.high and not exact.agrees(exact.mAP + 1e-5)
