"""The report's "what a user would pick instead" table, and its resolution and image-set check."""
import numpy as np
import pytest
from fake_records import eval_record, full_record, problem, small_val2014

from harness import records, report
from harness.manifest import load_manifest
from harness.metrics import Bootstrap, compute_metrics

pytestmark = pytest.mark.usefixtures("no_lock_entries")
SPECS = load_manifest()


def write_eval(runs, model_id, *, mAP_shift=0.0, smoke=False, resolution=None, peak=3500.0, seed=0):
    """A smoke run of 150 images, or (smoke=False) a run over the model's whole image set."""
    run_dir = records.new_run_dir(runs, model_id)
    spec = SPECS[model_id]
    if smoke:
        _, labels = problem(150, 5, seed=seed)
        scores = np.clip(np.random.default_rng(seed).random(labels.shape) + mAP_shift * labels, 0, 1).astype(np.float32)
        rec = eval_record(run_dir, scores, labels, model_id=model_id, protocol=spec.eval.protocol, smoke=True)
        rec["metrics"] = compute_metrics(scores, labels, spec.eval.protocol, ci=Bootstrap(50), f1=spec.eval.f1,
                                         threshold=spec.eval.threshold)
    else:
        rec = full_record(run_dir, model_id, seed=seed, signal=mAP_shift / 2, specs=SPECS)
    rec["eval"].update(resolution=resolution or spec.eval.resolution, batch_size=32, precision=spec.eval.precision)
    rec["dataset"]["image_set"] = spec.eval.image_set
    rec["measurement"]["peak_vram_mib"] = peak
    records.write_record(run_dir, rec)
    return rec


def write_bench(runs, model_id, fits):
    run_dir = records.new_run_dir(runs, model_id)
    records.write_record(run_dir, {
        "schema": 1, "kind": "bench", "run_id": run_dir.name, "model": {"id": model_id},
        "bench": {"fits": fits, "options": {}, "device": {"type": "cuda", "name": "NVIDIA RTX 3060"},
                  "results": [{"batch_size": 16, "images_per_s": 120.0, "peak_vram_mib": 5000.0}]},
        "environment": {"gpu": {"name": "NVIDIA RTX 3060"}}, "measurement": {},
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:10:00+00:00", "smoke": True})


@pytest.fixture
def small_split():
    """Whole-split runs of a val2014 of 600 images: how the report ranks and judges a whole-split run
    does not depend on the split's size."""
    with small_val2014():
        yield


@pytest.mark.usefixtures("small_split")
def test_pick_table_sorts_by_map_with_costs_and_smoke_last(tmp_path):
    runs = tmp_path / "runs"
    # the ASL run's scores are those of the run at another resolution below (fake_records computes them once)
    write_eval(runs, "asl-tresnetm-224", mAP_shift=1.0)
    write_eval(runs, "mldecoder-tresnetl-448", mAP_shift=1.2, seed=2, peak=None)  # a CPU run: no VRAM
    write_eval(runs, "mldecoder-tresnetxl-640", mAP_shift=1.0, smoke=True, seed=3)
    write_bench(runs, "mldecoder-tresnetl-448", {"budget_mib": 12288, "inference_max_batch": 48})
    data = report.collect(runs, SPECS, {}, measured_root=None)
    pick = data["pick"]
    assert [p["model"] for p in pick] == ["mldecoder-tresnetl-448", "asl-tresnetm-224", "mldecoder-tresnetxl-640"]
    assert pick[0]["mAP"] > pick[1]["mAP"] and pick[2]["status"] == "smoke"
    assert (pick[0]["peak_vram_mib"], pick[0]["cost_source"], pick[0]["fits"]) == (5000.0, "bench", "infer <= 48")
    assert (pick[1]["cost_source"], pick[1]["fits"]) == ("eval", "yes at batch 32 (eval)")
    assert pick[0]["precision"] == "fp16-fused" and pick[1]["precision"] == "fp32"
    md = report.render(data, "markdown")
    assert "## What a user would pick instead" in md and "5000 (bench)" in md
    assert "#23" in md and "#19 and #34" in md and "strictly" in md and "sha256" in md
    assert md.index("| mldecoder-tresnetl-448") < md.index("| asl-tresnetm-224", md.index("pick instead"))


@pytest.mark.usefixtures("small_split")
def test_a_record_at_another_resolution_never_counts(tmp_path):
    runs = tmp_path / "runs"
    write_eval(runs, "asl-tresnetxl-640", mAP_shift=1.0, resolution=448)  # ASL #23: XL evaluated at 448
    row = next(r for r in report.collect(runs, SPECS, {}, measured_root=None)["models"]
               if r["model"] == "asl-tresnetxl-640")
    # a record at another resolution that does not say so is a claim its own fields contradict
    assert row["status"] == "failed checks" and "resolution 448, not the paper's 640" in row["smoke_reasons"]
    assert any("smoke flags" in p and "resolution 448" in p for p in row["problems"])


def test_footnotes_name_each_models_f1_rule_and_threshold(tmp_path):
    runs = tmp_path / "runs"
    # a run's own F1 rule and threshold (its record's) are grouped with the manifest's: a smoke run carries them
    # as a whole-split one does
    write_eval(runs, "asl-tresnetm-224", mAP_shift=0.3, smoke=True)
    md = report.render(report.collect(runs, SPECS, {}, measured_root=None), "markdown")
    assert "asl-tresnetm-224, asl-tresnetxl-640 at threshold 0.8 (score > threshold" in md
    assert "asl-tresnetl-448 at threshold 0.5 (score >= threshold" in md
    assert "mldecoder-tresnetm-224, mldecoder-tresnetl-448, mldecoder-tresnetxl-640 at threshold 0.75" in md
