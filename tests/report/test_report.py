"""harness report: status rules, the choice of record per model, every format, no torch."""
import base64
import csv
import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from fake_records import eval_record, full_record, problem, small_val2014

from harness import records, report
from harness.cli import main
from harness.manifest import load_manifest
from harness.report.verify import HELD, Facts, Finding

pytestmark = pytest.mark.usefixtures("no_lock_entries")
SPECS = load_manifest()
RELEASED, TRAINED = SPECS["q2l-r101-448"], SPECS["mlspl-an-fine-tuned"]  # paper 84.9 / 64.1
HOLDING = Facts((Finding("mAP", HELD, "as recorded"),))  # what a run folder whose files hold gives


def record_with(mAP, ci=None, smoke=False, **sections):
    return records.Record(kind="eval", model={"id": "m"}, smoke=smoke, metrics={"mAP": mAP, "mAP_ci95": ci}, **sections)


@pytest.mark.parametrize("spec, mAP, ci, smoke, status", [
    (RELEASED, 84.95, [84.0, 84.8], False, "reproduced"),        # within 0.1
    (RELEASED, 84.75, [84.5, 85.0], False, "reproduced"),        # 0.15 off, but the paper is inside the CI
    (RELEASED, 84.75, [84.6, 84.85], False, "not reproduced"),   # 0.15 off and outside the CI
    (RELEASED, 84.9, [84.7, 85.1], True, "smoke"),               # exact, but smoke never counts
    (TRAINED, 64.9, [64.5, 65.3], False, "reproduced"),          # trained here: within 1.0
    (TRAINED, 65.3, [64.95, 65.6], False, "not reproduced"),
    (SPECS["mlspl-wan-linear"], 60.0, None, False, "no paper value"),
])
def test_status_rules(spec, mAP, ci, smoke, status):
    """The rules once the facts hold (harness.report.verify checks the files; tests/report/test_verify.py)."""
    assert report.status_of(spec, record_with(mAP, ci, smoke), HOLDING)[0] == status


def test_no_record_is_no_run_yet():
    assert report.status_of(RELEASED, None)[0] == "no run yet"


def test_a_record_without_its_files_is_unverifiable_whatever_it_says():
    assert report.status_of(RELEASED, record_with(84.9, [84.0, 85.5]))[0] == "unverifiable"


def write_run(runs, model_id, smoke, finished_at, seed=0, protocol=None):
    _, labels = problem(150, 5, seed=seed)
    scores = np.random.default_rng(seed).random(labels.shape).astype(np.float32)  # uninformative: mAP ~ 20
    run_dir = records.new_run_dir(runs, model_id)
    protocol = protocol or SPECS[model_id].eval.protocol
    rec = eval_record(run_dir, scores, labels, model_id=model_id, protocol=protocol, smoke=smoke,
                      finished_at=finished_at)
    records.write_record(run_dir, rec)
    return rec


def write_full_run(runs, model_id, finished_at, **options):
    run_dir = records.new_run_dir(runs, model_id)
    rec = full_record(run_dir, model_id, finished_at=finished_at, specs=SPECS, **options)
    records.write_record(run_dir, rec)
    return rec


@pytest.fixture(scope="module", autouse=True)
def val2014_of_600_images():
    """The whole-split run below covers a val2014 of 600 images: what these tests check of the report
    (the record it picks, its status, every format) does not depend on the split's size."""
    with small_val2014():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """q2l-r101-448: a whole-split run, then a later smoke run; q2l-r101-576: smoke only; a bench run.
    Written once for the module: its tests only read it (their reports go to their own tmp_path)."""
    root = tmp_path_factory.mktemp("report-runs") / "runs"
    real = write_full_run(root, "q2l-r101-448", "2026-01-01T00:00:00+00:00", seed=1)
    write_run(root, "q2l-r101-448", True, "2026-02-01T00:00:00+00:00", seed=2)
    write_run(root, "q2l-r101-576", True, "2026-01-05T00:00:00+00:00", seed=3)
    write_run(root, "q2l-tresl-448", False, "2026-01-05T00:00:00+00:00", seed=4, protocol="asl")  # wrong protocol
    bench_dir = records.new_run_dir(root, "q2l-r101-448")
    records.write_record(bench_dir, {
        "schema": 1, "kind": "bench", "run_id": bench_dir.name, "model": {"id": "q2l-r101-448"},
        "bench": {"params": 193_500_000, "gflops": 140.2, "fits": {"budget_mib": 12288, "inference_max_batch": 48},
                  "results": [{"batch_size": 1, "images_per_s": 60.0, "peak_vram_mib": 1900.0},
                              {"batch_size": 16, "images_per_s": 310.5, "peak_vram_mib": 6100.0}]},
        "environment": {"gpu": {"name": "NVIDIA H100"}}, "measurement": {},
        "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:10:00+00:00", "smoke": True})
    return root, real


def test_collect_picks_latest_non_smoke_and_shows_smoke_only_as_smoke(runs):
    root, real = runs
    data = report.collect(root, SPECS, report.load_paper_tables(), measured_root=None)
    rows = {r["model"]: r for r in data["models"]}
    assert set(rows) == set(SPECS)
    assert rows["q2l-r101-448"]["run_id"] == real["run_id"]
    assert rows["q2l-r101-448"]["mAP"] == real["metrics"]["mAP"]
    assert rows["q2l-r101-448"]["status"] == "not reproduced"  # random scores are far from 84.9
    assert rows["q2l-r101-576"]["status"] == "smoke"
    assert rows["q2l-tresl-448"]["status"] == "no run yet"
    assert any("protocol asl" in n for n in data["notes"])
    assert rows["asl-tresnetl-448"]["status"] == "no run yet"
    assert all(r["status"] in report.STATUSES for r in rows.values())
    cost = data["cost"][0]
    assert cost["params_m"] == pytest.approx(193.5) and cost["vram_b16"] == 6100.0 and cost["best_batch"] == 16
    assert cost["fits"] == "infer <= 48" and cost["j_per_image"] is None
    assert cost["device"] == "NVIDIA H100" and cost["options"] == "fp32"


@pytest.mark.usefixtures("plots_not_drawn")
def test_a_smoke_record_edited_to_the_papers_map_never_shows_as_reproduced(tmp_path):
    root = tmp_path / "runs"
    rec = write_run(root, "q2l-r101-448", True, "2026-01-01T00:00:00+00:00")
    run_dir = root / "q2l-r101-448" / rec["run_id"]
    # a smoke record whose numbers match the paper exactly
    patched = json.loads((run_dir / "record.json").read_text())
    patched["metrics"].update({"mAP": 84.9, "mAP_ci95": [84.0, 86.0]})
    (run_dir / "record.json").unlink()
    records.write_record(run_dir, patched)
    data = report.collect(root, SPECS, {})
    row = next(r for r in data["models"] if r["model"] == "q2l-r101-448")
    assert row["status"] == "failed checks" and any(p.startswith("mAP: recomputed") for p in row["problems"])
    for fmt in report.FORMATS:
        text = report.render(data, fmt)
        if fmt == "json":
            shown = next(r for r in json.loads(text)["models"] if r["model"] == "q2l-r101-448")
            assert shown["status"] == "failed checks" and "mAP: recomputed" in shown["problems"][0]
            continue
        line = next(line for line in text.splitlines() if "q2l-r101-448" in line)  # its row in the table
        assert "reproduced" not in line and "failed checks" in line and "mAP: recomputed" in line


def test_every_format_renders(runs):
    root, real = runs
    data = report.collect(root, SPECS, report.load_paper_tables())
    md = report.render(data, "markdown")
    line = next(line for line in md.splitlines() if line.startswith("| q2l-r101-448"))
    assert f"{real['metrics']['mAP']:.2f}" in line and "84.9" in line and "NVIDIA H100" in line
    assert "## Query2Label" in md and "## ASL" in md and "## MLSPL" in md and "## Cost" in md
    assert "Protocol: Query2Label voc_mAP" in md and "40,504" in md and "threshold 0.5" in md

    rows = list(csv.DictReader(io.StringIO(report.render(data, "csv"))))
    assert len(rows) == len(SPECS)
    row = next(r for r in rows if r["model"] == "q2l-r101-448")
    assert float(row["mAP"]) == pytest.approx(real["metrics"]["mAP"]) and row["status"] == "not reproduced"

    latex = report.render(data, "latex")
    assert "\\toprule" in latex and "q2l-r101-448" in latex

    parsed = json.loads(report.render(data, "json"))
    assert {r["model"] for r in parsed["models"]} == set(SPECS) and "q2l" in parsed["footnotes"]

    html = report.render(data, "html")
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html and "q2l-r101-448" in html
    for png in re.findall(r'src="data:image/png;base64,([^"]+)"', html):  # drawn for real here (plots_not_drawn)
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")


def test_mlspl_rows_carry_the_paper_context():
    data = report.collect("/nonexistent-runs", SPECS, report.load_paper_tables())
    row = next(r for r in data["models"] if r["model"] == "mlspl-an-fine-tuned")
    assert row["paper_confidence"] == "high" and "64.92" in row["reruns_by_others"]
    assert row["status"] == "no run yet" and row["tolerance"] == 1.0
    bce = next(r for r in data["models"] if r["model"] == "mlspl-bce-fine-tuned")  # the full-label upper bound
    assert "76.78" in bce["reruns_by_others"] and bce["paper_mAP"] is None


def test_report_command_writes_a_file(runs, tmp_path, capsys):
    root, _ = runs
    out = tmp_path / "out" / "report.md"
    assert main(["report", "--runs", str(root), "--out", str(out)]) == 0
    assert "| q2l-r101-448" in out.read_text()
    # printed as JSON: every model has a row, runs or not (no whole-split run to verify a second time)
    assert main(["report", "--runs", str(tmp_path / "no-runs"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"]
    assert main(["report", "--tables", str(tmp_path / "nope")]) == 2


def test_report_out_that_is_a_fifo_is_one_line_and_never_opened(tmp_path, capsys):
    """A FIFO named by --out was opened to see whether it held a report: the command hung forever."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # a report of no runs (every model 'no run yet') is written the same way
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out", str(fifo)]) == 2  # hangs without the check
    err = capsys.readouterr().err
    assert "is a FIFO (named pipe), not a file" in err and len(err.splitlines()) == 1


def test_report_does_not_import_torch():
    code = "import sys, harness.report, harness.commands.report; assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.usefixtures("plots_not_drawn")
def test_write_all_renders_every_format(runs, tmp_path):
    root, real = runs
    written = report.write_all(runs_root=root, out_dir=tmp_path / "reports")
    expected = [f"report.{e}" for e in report.EXTENSIONS.values()] + ["report-cost.csv"]  # runs hold a bench
    assert sorted(p.name for p in written) == sorted(expected)
    assert f"{real['metrics']['mAP']:.2f}" in (tmp_path / "reports" / "report.md").read_text()


def bench_record(root, model_id, device, finished_at, options=None, checks=(), fits=None, environment=None):
    run_dir = records.new_run_dir(root, model_id)
    results = [{"batch_size": b, "images_per_s": 10.0 * b, "peak_vram_mib": 1000.0 * b, "memory_check": c}
               for b, c in zip((1, 16), list(checks) or [None, None])]
    records.write_record(run_dir, {
        "schema": 1, "kind": "bench", "run_id": run_dir.name, "model": {"id": model_id},
        "bench": {"params": 1e6, "gflops": 1.0, "device": device, "options": options or {"amp": False},
                  "fits": fits or {}, "results": results},
        "environment": environment or {}, "measurement": {}, "started_at": finished_at, "finished_at": finished_at,
        "smoke": True})
    return run_dir


GPU = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"}
CPU = {"type": "cpu", "name": "AMD EPYC 7B13"}
GPU_ENV = {"gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04"}, "torch": "2.11.0+cu130",
           "cuda": "13.0", "git_commit": "0123456789abcdef"}


def check(gap, problems=()):
    return {"consistent": not problems, "nvml_minus_torch_reserved_mib": gap, "problems": list(problems), "notes": []}


def test_cost_rows_per_device_and_options_with_committed_measurements(tmp_path):
    runs, measured = tmp_path / "runs", tmp_path / "measured"
    bench_record(runs, "q2l-r101-448", CPU, "2026-01-01T00:00:00+00:00")
    bench_record(runs, "q2l-r101-448", CPU, "2026-01-02T00:00:00+00:00")  # the later CPU run replaces the first
    bench_record(measured, "q2l-r101-448", GPU, "2026-01-01T00:00:00+00:00", checks=[check(480.0), check(530.0)],
                 fits={"budget_mib": 12288, "inference_max_batch": 40, "train_max_batch": 0}, environment=GPU_ENV)
    bench_record(measured, "q2l-r101-448", GPU, "2026-01-01T00:00:00+00:00", options={"amp": "bf16"},
                 checks=[check(500.0), check(510.0)], environment=GPU_ENV)
    data = report.collect(runs, SPECS, {}, measured_root=measured)
    cost = {(r["device"], r["options"]): r for r in data["cost"]}
    assert set(cost) == {(CPU["name"], "fp32"), (GPU["name"], "fp32"), (GPU["name"], "amp=bf16")}
    assert cost[(CPU["name"], "fp32")]["finished_at"].startswith("2026-01-02")
    assert cost[(GPU["name"], "fp32")]["fits"] == "infer <= 40, train no"
    assert cost[(GPU["name"], "fp32")]["source"] == "tables/measured"
    md = report.render(data, "markdown")
    assert "NVML and PyTorch peaks agree on every GPU measurement" in md and "480 to 530 MiB" in md
    assert "Measured on NVIDIA H100 80GB HBM3 (driver 580.159.04), torch 2.11.0+cu130, cuda 13.0, " \
           "harness commit 0123456789 (records in tables/measured)" in md
    assert f"Measured on {CPU['name']} (records in runs)" in md
    without = report.collect(runs, SPECS, {}, measured_root=None)
    assert [r["device"] for r in without["cost"]] == [CPU["name"]]


def test_cost_table_says_when_nvml_and_torch_disagree(tmp_path):
    bench_record(tmp_path, "q2l-r101-448", GPU, "2026-01-01T00:00:00+00:00",
                 checks=[check(500.0), check(-900.0, ["NVML peak 100 MiB < torch max reserved 1000 MiB"])])
    md = report.render(report.collect(tmp_path, SPECS, {}, measured_root=None), "markdown")
    assert "NVML vs PyTorch peaks disagree: q2l-r101-448: NVML peak 100 MiB" in md
    assert "agree on every GPU measurement" not in md


def test_report_command_measured_folder(tmp_path, capsys):
    measured = tmp_path / "measured"
    bench_record(measured, "q2l-r101-448", GPU, "2026-01-01T00:00:00+00:00", environment=GPU_ENV)
    runs = str(tmp_path / "runs")
    assert main(["report", "--runs", runs, "--measured", str(measured)]) == 0
    assert "NVIDIA H100 80GB HBM3" in capsys.readouterr().out
    assert main(["report", "--runs", runs, "--measured", "none"]) == 0
    assert "NVIDIA H100 80GB HBM3" not in capsys.readouterr().out
    assert main(["report", "--runs", runs, "--measured", str(tmp_path / "nope")]) == 2
    assert "measured records folder not found" in capsys.readouterr().err


def test_bench_row_reads_batch_1_16_oom_and_fit_reasons():
    def row(b, vram, ips, oom=False):
        return {"batch_size": b, "oom": oom, "peak_vram_mib": vram, "images_per_s": ips,
                "energy_j_per_image": None if oom else 0.5, "peak_rss_mib": None if oom else 900.0}

    def record(device, results, fits):
        return records.Record(kind="bench", model={"id": "m"}, bench={
            "resolution": 224, "params": 25_500_000, "gflops": 8.2, "device": device,
            "options": {"amp": "bf16", "channels_last": True, "compile": False}, "results": results, "fits": fits})

    fits = {"budget_mib": 12288.0, "inference_max_batch": 256, "train_max_batch": 12,
            "reasons": {"inference_max_batch": "fits at the search cap 256; larger not tried"}}
    r = report.bench_row("m", record(GPU, [row(1, 1500.4, 50.0), row(16, 4000.0, 400.0), row(64, None, None, True)],
                                     fits))
    assert r["vram_b1"] == 1500.4 and r["vram_b16"] == 4000.0 and r["peak_rss_mib"] == 900.0
    assert r["images_per_s"] == 400.0 and r["best_batch"] == 16  # the fastest that ran, not the OOM one
    assert r["fits"] == "infer >= 256, train <= 12" and r["options"] == "amp=bf16, channels_last"
    cells = report.display_cost(r)
    assert cells["vram_b1"] == "1500" and cells["images_per_s"] == "400.0 (batch 16)" and cells["params_m"] == "25.5"
    cpu_fits = {"budget_mib": 12288.0, "inference_max_batch": None, "train_max_batch": None,
                "reasons": {"inference_max_batch": "needs a GPU", "train_max_batch": "needs a GPU"}}
    r = report.bench_row("m", record(CPU, [row(1, None, 5.0)], cpu_fits))
    assert r["vram_b1"] is None and r["vram_b16"] is None and r["fits"] == "needs a GPU"
    assert r["device"] == CPU["name"] and report.display_cost(r)["vram_b16"] == "n/a"


def test_the_report_rechecks_what_a_record_says_about_itself():
    clean = record_with(84.9, [84.0, 85.5])
    assert report.status_of(RELEASED, clean, HOLDING)[0] == "reproduced"
    for extra, reason in (({"checkpoint": {"random_weights": True}}, "random weights"),
                          ({"eval": {"limit": 100}}, "--limit 100"),
                          ({"dataset": {"smoke_subset": True}}, "smoke subset")):
        record = dataclasses.replace(clean, **extra)  # a record that does not flag itself
        assert report.status_of(RELEASED, record, HOLDING)[0] == "smoke"
        assert report.smoke_reasons(RELEASED, record, HOLDING) == [reason]


def test_a_status_reached_through_the_ci_says_so():
    by_ci = report.display(report.model_row(RELEASED, record_with(84.75, [84.5, 85.0]), {}, HOLDING))
    by_tolerance = report.display(report.model_row(RELEASED, record_with(84.95, [84.0, 84.8]), {}, HOLDING))
    assert by_ci["status"] == "reproduced (paper inside CI)" and by_tolerance["status"] == "reproduced"


@pytest.mark.usefixtures("plots_not_drawn")
def test_write_all_adds_the_cost_table_as_csv(tmp_path):
    bench_record(tmp_path / "runs", "q2l-r101-448", GPU, "2026-01-01T00:00:00+00:00", environment=GPU_ENV)
    written = report.write_all(runs_root=tmp_path / "runs", out_dir=tmp_path / "out", measured_root=None)
    rows = list(csv.DictReader((tmp_path / "out" / "report-cost.csv").open()))
    assert tmp_path / "out" / "report-cost.csv" in written
    assert [(r["model"], r["device"], r["vram_b16"], r["best_batch"]) for r in rows] == \
        [("q2l-r101-448", GPU["name"], "16000.0", "16")]


def test_runs_that_is_a_file_is_one_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.write_text("not a folder")
    assert main(["report", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a runs folder" in err[0]
    assert runs.read_text() == "not a folder"
