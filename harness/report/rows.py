"""Rows of the report from the run records: one per manifest model (the latest complete non-smoke
run wins), one per bench (model, device, precision), and the "what a user would pick instead" rows."""
import csv
import dataclasses
from pathlib import Path

from harness.ctran.report import partial_rows
from harness.manifest import PACKAGE_DATA
from harness.q2l.report import trained_rows
from harness.records import Record, iter_records
from harness.records.curves import FOLDER as CURVES_FOLDER
from harness.records.curves import read_curves
from harness.report.fidelity_notes import record_notes
from harness.report.judge import facts_of, problems, smoke_reasons, status_of

FAMILIES = {"q2l": "Query2Label", "asl": "ASL", "mldecoder": "ML-Decoder",
            "mlspl": "MLSPL (single positive labels, trained here)", "ctran": "C-Tran (trained here)"}
IMAGE_SETS = {"all": "all 40,504 COCO val2014 images (unannotated ones are all-negative rows)",
              "annotated": "the 40,137 annotated COCO val2014 images"}
BUDGET_MIB = 12 * 1024
NO_RESULT = ("smoke", "failed checks", "unverifiable")  # statuses whose numbers are no result
DEFAULT_TABLES = (PACKAGE_DATA / "paper").resolve()
DEFAULT_MEASURED = (PACKAGE_DATA / "measured").resolve()  # measured records committed with the code

COLUMNS = [("model", "model"), ("resolution", "resolution"), ("paper_mAP", "paper mAP"), ("mAP", "ours"),
           ("difference", "difference"), ("ci95", "95% CI"), ("status", "status"), ("CF1", "CF1 ours / paper"),
           ("OF1", "OF1 ours / paper"), ("peak_vram_mib", "peak VRAM (MiB)"), ("images_per_s", "images/s"),
           ("gpu", "GPU")]
COST_COLUMNS = [("model", "model"), ("resolution", "resolution"), ("params_m", "params (M)"),
                ("gflops", "GFLOPs"), ("options", "precision / options"), ("vram_b1", "peak VRAM b1 (MiB)"),
                ("vram_b16", "peak VRAM b16 (MiB)"), ("images_per_s", "images/s"), ("j_per_image", "J/image"),
                ("fits", "fits in 12 GB (max batch)"), ("device", "device")]



# ---------------------------------------------------------------- data

def _latest(records):
    return max(records, key=lambda r: (r.finished_at or "", r.run_id or ""), default=None)


def first_counting(records, counts):
    """The latest record that counts(record), else the latest: newest first, so that only the
    records newer than the one shown have their files checked."""
    newest_first = sorted(records, key=lambda r: (r.finished_at or "", r.run_id or ""), reverse=True)
    return next((r for r in newest_first if counts(r)), newest_first[0] if newest_first else None)


def load_paper_tables(tables_dir=None):
    """{csv file name: list of row dicts} of tables/paper/*.csv (empty if the folder is missing)."""
    folder = Path(tables_dir) if tables_dir else DEFAULT_TABLES
    return {p.name: list(csv.DictReader(p.open(newline=""))) for p in sorted(folder.glob("*.csv"))}


def _mlspl_context(spec, tables):
    """The paper number's stated confidence and others' re-runs of the same setting (MLSPL only)."""
    loss, mode = spec.train["loss"], spec.train["mode"]
    confidence = next((r.get("confidence") or None for r in tables.get("mlspl_coco.csv", [])
                       if r.get("loss") == loss and r.get("mode") == mode), None)
    method = "BCE (full labels)" if loss == "BCE" else loss  # the re-runs table's name for the upper bound
    reruns = [f"{float(r['mAP']):.2f} ({r['source']})" for r in tables.get("mlspl_coco_reruns.csv", [])
              if r.get("method") == method and r.get("mode") == mode and r.get("mAP")]
    return confidence, "; ".join(reruns) or None


def model_row(spec, record, tables, facts=None):
    facts = facts_of(spec, record, facts) if record else None
    status, tolerance, rule = status_of(spec, record, facts)
    reasons = smoke_reasons(spec, record, facts) if record else []
    troubles = problems(spec, record, facts) if status in ("failed checks", "unverifiable") else []
    record = record or Record(kind="eval", model={"id": spec.id})  # no run yet: every section empty
    m, ev = record.metrics, record.eval
    paper = spec.paper.get("metrics", {})
    gpu = (record.environment.get("gpu") or {}).get("name")
    ours = m.get("mAP")
    row = {
        "family": spec.family, "model": spec.id, "resolution": spec.eval.resolution,
        "paper_mAP": spec.paper_map, "mAP": ours,
        "difference": ours - spec.paper_map if ours is not None and spec.paper_map is not None else None,
        "ci95": m.get("mAP_ci95"), "status": status, "tolerance": tolerance,
        "CF1": m.get("CF1"), "paper_CF1": paper.get("CF1"), "OF1": m.get("OF1"), "paper_OF1": paper.get("OF1"),
        "top3_CF1": (m.get("top3") or {}).get("CF1"), "paper_top3_CF1": paper.get("top3_CF1"),
        "top3_OF1": (m.get("top3") or {}).get("OF1"), "paper_top3_OF1": paper.get("top3_OF1"),
        "peak_vram_mib": record.measurement.get("peak_vram_mib"),
        "images_per_s": record.timings.get("images_per_s"),
        "gpu": "cpu" if ev.get("device") == "cpu" else gpu,
        "protocol": m.get("protocol", spec.eval.protocol), "image_set": spec.eval.image_set,
        "n_images": m.get("n_images"), "run_id": record.run_id,
        "smoke_reasons": reasons, "problems": troubles, "reproduced_by": rule,
        "paper_row": spec.paper.get("row"),
        "tf32": (ev.get("numerics") or {}).get("tf32"),
        "classes_without_positives": m.get("classes_without_positives") or [],
        "f1_rule": m.get("f1_rule", spec.eval.f1), "threshold": m.get("threshold", spec.eval.threshold),
        "precision": ev.get("precision", spec.eval.precision),
        "batch_size": ev.get("batch_size"),
        "fidelity_notes": record_notes(record),
        # the conditions of the number, as timm's results CSVs carry theirs (params and GFLOPs: from a bench)
        "params_m": None, "gflops": None, "torch": record.environment.get("torch"),
        "cuda": record.environment.get("cuda") if ev.get("device") not in (None, "cpu") else None,
        "date": (record.finished_at or "")[:10] or None,
    }
    if spec.family == "mlspl":
        row["paper_confidence"], row["reruns_by_others"] = _mlspl_context(spec, tables)
    if spec.family == "ctran":
        row["selection"] = record.ctran.get("selection")
    return row


def _options_text(options):
    return ", ".join(k if v is True else f"{k}={v}" for k, v in (options or {}).items() if v) or "fp32"


def _fits_text(fits):
    """'infer <= 48, train <= 6' within the budget (12 GiB unless said); why not, when not searched."""
    parts = []
    for key, label in (("inference", "infer"), ("train", "train")):
        n = fits.get(f"{key}_max_batch")
        if n is not None:
            capped = "search cap" in ((fits.get("reasons") or {}).get(f"{key}_max_batch") or "")
            parts.append(f"{label} no" if n == 0 else f"{label} {'>=' if capped else '<='} {n}")
    if not parts:
        return "; ".join(sorted(set((fits.get("reasons") or {}).values()))) or None
    budget = fits.get("budget_mib")
    return ", ".join(parts) + ("" if budget in (None, BUDGET_MIB) else f" (budget {budget / 1024:g} GiB)")


def _bench_device(record):
    """The device a bench ran on, by name (older records name only the environment's GPU)."""
    device = (record.bench.get("device") or {}).get("name")
    return device or (record.environment.get("gpu") or {}).get("name")


def _memory_checks(results):
    """The NVML vs PyTorch peak checks of a bench's batch sizes (harness.measure.consistency)."""
    checks = [r["memory_check"] for r in results if (r.get("memory_check") or {}).get("consistent") is not None]
    gaps = [c["nvml_minus_torch_reserved_mib"] for c in checks]
    return {"checked": len(checks), "problems": [p for c in checks for p in c["problems"]],
            "gap_mib": [min(gaps), max(gaps)] if gaps else None}


def bench_row(spec_or_id, record):
    bench = record.bench
    results = [r for r in bench.get("results") or [] if isinstance(r, dict)]
    by_batch = {r.get("batch_size"): r for r in results}
    fastest = max((r for r in results if r.get("images_per_s")), key=lambda r: r["images_per_s"], default={})
    params = bench.get("params")
    spec = spec_or_id if not isinstance(spec_or_id, str) else None
    environment = record.environment
    return {
        "model": spec.id if spec else spec_or_id,
        "resolution": bench.get("resolution") or (spec.eval.resolution if spec else None),
        "params_m": params / 1e6 if isinstance(params, (int, float)) else None,
        "gflops": bench.get("gflops"),
        "options": _options_text(bench.get("options")),
        "vram_b1": (by_batch.get(1) or {}).get("peak_vram_mib"),
        "vram_b16": (by_batch.get(16) or {}).get("peak_vram_mib"),
        "images_per_s": fastest.get("images_per_s"), "best_batch": fastest.get("batch_size"),
        "vram_at_best": fastest.get("peak_vram_mib"),
        "j_per_image": fastest.get("energy_j_per_image"), "peak_rss_mib": fastest.get("peak_rss_mib"),
        "fits": _fits_text(bench.get("fits") or {}),
        "device": _bench_device(record),
        "memory_check": _memory_checks(results),
        "measured_on": _provenance(environment, bench.get("device") or {}), "source": record.found_in,
        "run_id": record.run_id, "finished_at": record.finished_at,
    }


def _provenance(environment, device):
    """'NVIDIA H100 (driver 580.1), torch 2.11, cuda 13.0, harness commit abc1234' for a bench record."""
    gpu = environment.get("gpu") or {}
    if device.get("type") == "cpu" or not gpu.get("name"):
        parts = [device.get("name") or environment.get("cpu")]
    else:
        parts = [f"{gpu['name']} (driver {gpu.get('driver') or 'unknown'})"]
    on_gpu = device.get("type") != "cpu"  # a CPU run names no CUDA (the build's version says nothing)
    parts += [f"{k} {environment[k]}" for k in ("torch", "cuda") if environment.get(k) and (on_gpu or k == "torch")]
    if environment.get("git_commit"):
        parts.append(f"harness commit {environment['git_commit'][:10]}" + (" (dirty)" if environment.get("git_dirty")
                                                                           else ""))
    return ", ".join(p for p in parts if p) or None


def _records(roots, on_problem):
    """(run folder, record) under the given folders (each folder once), tagged with where it was found."""
    kwargs = {"on_problem": on_problem} if on_problem else {}
    seen = set()
    for root, source in roots:
        if root is None or Path(root).resolve() in seen:
            continue
        seen.add(Path(root).resolve())
        for run_dir, record in iter_records(root, **kwargs):
            yield run_dir, dataclasses.replace(record, found_in=source)


def collect(runs_root, specs, tables, on_problem=None, measured_root=DEFAULT_MEASURED):
    """{"models": [row per manifest model], "cost": [row per model, device and options], "notes": [...]}.

    Records come from runs_root and from measured_root (the measured records committed in
    tables/measured/; None to leave them out).
    """
    evals, benches, q2l_trained, notes, folders = {}, {}, {}, [], {}
    for run_dir, record in _records([(runs_root, "runs"), (measured_root, "tables/measured")], on_problem):
        folders[id(record)] = run_dir
        model_id = record.model_id
        if model_id not in specs:
            notes.append(f"run {record.run_id} of '{model_id}' is not in the manifest: not shown")
            continue
        if record.kind == "bench":
            key = (model_id, _bench_device(record), _options_text(record.bench.get("options")))
            benches.setdefault(key, []).append(record)
        elif record.kind == "train" and specs[model_id].family == "q2l":  # trained here, not the release
            q2l_trained.setdefault(model_id, []).append(record)
        elif record.kind in ("eval", "train"):  # a train record holds its test evaluation
            protocol = record.eval.get("protocol")
            if protocol != specs[model_id].eval.protocol:
                notes.append(f"run {record.run_id} of {model_id} used protocol {protocol}, not the paper's "
                             f"{specs[model_id].eval.protocol}: not compared")
                continue
            evals.setdefault(model_id, []).append(record)
    checked = {}

    def judged(spec, record):  # each record's files are checked once (harness.report.verify)
        key = (spec.id, record.folder, record.run_id)
        if key not in checked:
            checked[key] = facts_of(spec, record)
        return checked[key]

    def counts(spec, record):  # smoke never stands for a model when something else does
        return status_of(spec, record, judged(spec, record))[0] != "smoke"

    rows, curves = [], []
    for model_id, spec in specs.items():
        found = evals.get(model_id, [])
        chosen = first_counting(found, lambda r, spec=spec: counts(spec, r))
        rows.append(model_row(spec, chosen, tables, judged(spec, chosen) if chosen else None))
        trained = [r for r in found if (folders[id(r)] / CURVES_FOLDER).is_dir()]  # C-Tran: the training, not --known
        shown = _latest([r for r in trained if not r.smoke]) or _latest(trained)
        series = read_curves(folders[id(shown)]) if shown is not None else {}
        if series:  # a training run's curves, from the TensorBoard events it wrote
            curves.append({"model": model_id, "run_id": shown.run_id, "smoke": bool(shown.smoke), "series": series})
    for model_id, found in q2l_trained.items():  # a Query2Label training's curves (its own table, not the release's)
        shown = _latest([r for r in found if not r.smoke]) or _latest(found)
        series = read_curves(folders[id(shown)])
        if series:
            curves.append({"model": model_id, "run_id": shown.run_id, "smoke": bool(shown.smoke), "series": series})
    cost = [bench_row(specs[key[0]], _latest(rs)) for key, rs in sorted(benches.items(), key=lambda kv: str(kv[0]))]
    for row in rows:  # a model's size does not depend on where it ran: any of its benches says it
        sized = [c for c in cost if c["model"] == row["model"] and c["params_m"] is not None]
        if sized:
            row["params_m"], row["gflops"] = sized[0]["params_m"], sized[0]["gflops"]

    return {"models": rows, "cost": cost, "pick": pick_rows(rows, cost), "notes": notes,
            "ctran": partial_rows(evals, specs, lambda spec, record: status_of(spec, record, judged(spec, record))[0]),
            "curves": curves, "q2l_trained": trained_rows(q2l_trained, specs)}


def pick_rows(rows, cost):
    """"What a user would pick instead": every model with an evaluation, best of our mAP first
    (smoke runs last), with what it costs: the evaluation's own peak VRAM and speed, else its bench's."""
    out = []
    for r in rows:
        if r["run_id"] is None:
            continue
        benches = [c for c in cost if c["model"] == r["model"]]
        bench = max(benches, key=lambda c: (c["options"] == "fp32", c["images_per_s"] or 0), default={})
        vram, ips, source = r["peak_vram_mib"], r["images_per_s"], "eval"
        if vram is None and bench.get("vram_at_best") is not None:
            vram, ips, source = bench["vram_at_best"], bench["images_per_s"], "bench"
        fits = bench.get("fits")
        if fits is None and r["peak_vram_mib"] is not None and r["batch_size"]:
            fits = f"{'yes' if r['peak_vram_mib'] <= BUDGET_MIB else 'no'} at batch {r['batch_size']} (eval)"
        out.append({"model": r["model"], "resolution": r["resolution"], "mAP": r["mAP"], "paper_mAP": r["paper_mAP"],
                    "status": r["status"], "precision": r["precision"], "peak_vram_mib": vram, "images_per_s": ips,
                    "cost_source": source if vram is not None or ips is not None else None, "fits": fits,
                    "gpu": r["gpu"]})
    return sorted(out, key=lambda p: (p["status"] in NO_RESULT, -(p["mAP"] if p["mAP"] is not None else -1)))
