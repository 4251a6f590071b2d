"""Tables of the run records against the papers: markdown, csv, latex, json or html (with plots).

Reads only run records, the manifest (the model list and paper numbers) and tables/paper/*.csv;
it never runs a model and never imports torch. One table per family: per model the latest
complete non-smoke evaluation wins; with only smoke runs the latest smoke run is shown as smoke,
which never counts as reproduced.
"""
import base64
import csv
import io
import json
from pathlib import Path

from tabulate import tabulate

from harness.manifest import PACKAGE_DATA
from harness.metrics import F1_RULES, PROTOCOL_DESCRIPTIONS, THRESHOLD, TOP3_RULE
from harness.records import iter_records
from harness.report_files import HTML_MARK, MARK, check_target, mark, write_report_file, write_report_png

FORMATS = ("markdown", "csv", "latex", "json", "html")
FAMILIES = {"q2l": "Query2Label", "asl": "ASL", "mldecoder": "ML-Decoder",
            "mlspl": "MLSPL (single positive labels, trained here)", "ctran": "C-Tran (trained here)"}
TOLERANCE = {True: 0.1, False: 1.0}  # |ours - paper| in mAP points: released checkpoint, trained here
IMAGE_SETS = {"all": "all 40,504 COCO val2014 images (unannotated ones are all-negative rows)",
              "annotated": "the 40,137 annotated COCO val2014 images"}
STATUSES = ("reproduced", "not reproduced", "no paper value", "smoke", "no run yet")
BUDGET_MIB = 12 * 1024
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
    return max(records, key=lambda r: (r.get("finished_at") or "", r.get("run_id") or ""), default=None)


def smoke_reasons(spec, record):
    """Why a record cannot count: its own smoke reasons, and what the report re-checks itself (a
    record from an older harness, or a pin added after the run, must not slip through)."""
    reasons = list(record.get("smoke_reasons") or (["flagged smoke"] if record.get("smoke") else []))
    checkpoint, ev, dataset = (record.get(k) or {} for k in ("checkpoint", "eval", "dataset"))
    derived = [("random weights", checkpoint.get("random_weights")),
               (f"--limit {ev.get('limit')}", ev.get("limit")),
               ("smoke subset", dataset.get("smoke_subset")),
               # the resolution check: the entry's resolution and image set, or no reproduction
               (f"resolution {ev.get('resolution')}, not the paper's {spec.eval.resolution}",
                ev.get("resolution") not in (None, spec.eval.resolution)),
               (f"image set {dataset.get('image_set')}, not the paper's {spec.eval.image_set}",
                dataset.get("image_set") not in (None, spec.eval.image_set))]
    pinned = spec.files["checkpoint"].sha256 if spec.released and "checkpoint" in spec.files else None
    if pinned and checkpoint.get("sha256") and checkpoint["sha256"] != pinned:
        derived.append(("weights are not the pinned release", True))
    reasons += [text for text, applies in derived if applies and not any(text in r for r in reasons)]
    return reasons


def judge(spec, record):
    """(status, tolerance) of one model's chosen record; see STATUSES."""
    return _judge(spec, record)[:2]


def _judge(spec, record):
    """(status, tolerance, rule): rule says what made it "reproduced" ("tolerance" or "CI")."""
    tolerance = TOLERANCE[bool(spec.released)]
    if record is None:
        return "no run yet", tolerance, None
    if smoke_reasons(spec, record):
        return "smoke", tolerance, None
    paper, ours = spec.paper_map, (record.get("metrics") or {}).get("mAP")
    if paper is None:
        return "no paper value", tolerance, None
    if ours is None:
        return "not reproduced", tolerance, None
    if abs(ours - paper) <= tolerance + 1e-9:
        return "reproduced", tolerance, "tolerance"
    ci = (record.get("metrics") or {}).get("mAP_ci95")
    if ci is not None and ci[0] <= paper <= ci[1]:
        return "reproduced", tolerance, "CI"
    return "not reproduced", tolerance, None


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


def model_row(spec, record, tables):
    from harness.fidelity_notes import record_notes

    m = (record or {}).get("metrics") or {}
    paper = spec.paper.get("metrics", {})
    measurement = (record or {}).get("measurement") or {}
    gpu = (((record or {}).get("environment") or {}).get("gpu") or {}).get("name")
    status, tolerance, rule = _judge(spec, record)
    ours = m.get("mAP")
    row = {
        "family": spec.family, "model": spec.id, "resolution": spec.eval.resolution,
        "paper_mAP": spec.paper_map, "mAP": ours,
        "difference": ours - spec.paper_map if ours is not None and spec.paper_map is not None else None,
        "ci95": m.get("mAP_ci95"), "status": status, "tolerance": tolerance,
        "CF1": m.get("CF1"), "paper_CF1": paper.get("CF1"), "OF1": m.get("OF1"), "paper_OF1": paper.get("OF1"),
        "top3_CF1": (m.get("top3") or {}).get("CF1"), "paper_top3_CF1": paper.get("top3_CF1"),
        "top3_OF1": (m.get("top3") or {}).get("OF1"), "paper_top3_OF1": paper.get("top3_OF1"),
        "peak_vram_mib": measurement.get("peak_vram_mib"),
        "images_per_s": ((record or {}).get("timings") or {}).get("images_per_s"),
        "gpu": "cpu" if record and (record.get("eval") or {}).get("device") == "cpu" else gpu,
        "protocol": m.get("protocol", spec.eval.protocol), "image_set": spec.eval.image_set,
        "n_images": m.get("n_images"), "run_id": (record or {}).get("run_id"),
        "smoke_reasons": smoke_reasons(spec, record) if record else [], "reproduced_by": rule,
        "paper_row": spec.paper.get("row"),
        "tf32": (((record or {}).get("eval") or {}).get("numerics") or {}).get("tf32"),
        "classes_without_positives": m.get("classes_without_positives") or [],
        "f1_rule": m.get("f1_rule", spec.eval.f1), "threshold": m.get("threshold", spec.eval.threshold),
        "precision": ((record or {}).get("eval") or {}).get("precision", spec.eval.precision),
        "batch_size": ((record or {}).get("eval") or {}).get("batch_size"),
        "fidelity_notes": record_notes(record),
    }
    if spec.family == "mlspl":
        row["paper_confidence"], row["reruns_by_others"] = _mlspl_context(spec, tables)
    if spec.family == "ctran":
        row["selection"] = ((record or {}).get("ctran") or {}).get("selection")
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
    device = ((record.get("bench") or {}).get("device") or {}).get("name")
    return device or (((record.get("environment") or {}).get("gpu")) or {}).get("name")


def _memory_checks(results):
    """The NVML vs PyTorch peak checks of a bench's batch sizes (harness.measure.consistency)."""
    checks = [r["memory_check"] for r in results if (r.get("memory_check") or {}).get("consistent") is not None]
    gaps = [c["nvml_minus_torch_reserved_mib"] for c in checks]
    return {"checked": len(checks), "problems": [p for c in checks for p in c["problems"]],
            "gap_mib": [min(gaps), max(gaps)] if gaps else None}


def bench_row(spec_or_id, record):
    bench = record.get("bench") or {}
    results = [r for r in bench.get("results") or [] if isinstance(r, dict)]
    by_batch = {r.get("batch_size"): r for r in results}
    fastest = max((r for r in results if r.get("images_per_s")), key=lambda r: r["images_per_s"], default={})
    params = bench.get("params")
    spec = spec_or_id if not isinstance(spec_or_id, str) else None
    environment = record.get("environment") or {}
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
        "measured_on": _provenance(environment, bench.get("device") or {}), "source": record.get("_source", "runs"),
        "run_id": record.get("run_id"), "finished_at": record.get("finished_at"),
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
    """Every record under the given folders (each folder once), tagged with where it was found."""
    kwargs = {"on_problem": on_problem} if on_problem else {}
    seen = set()
    for root, source in roots:
        if root is None or Path(root).resolve() in seen:
            continue
        seen.add(Path(root).resolve())
        for _, record in iter_records(root, **kwargs):
            record["_source"] = source
            yield record


def collect(runs_root, specs, tables, on_problem=None, measured_root=DEFAULT_MEASURED):
    """{"models": [row per manifest model], "cost": [row per model, device and options], "notes": [...]}.

    Records come from runs_root and from measured_root (the measured records committed in
    tables/measured/; None to leave them out).
    """
    evals, benches, notes = {}, {}, []
    for record in _records([(runs_root, "runs"), (measured_root, "tables/measured")], on_problem):
        model_id = (record.get("model") or {}).get("id")
        if model_id not in specs:
            notes.append(f"run {record.get('run_id')} of '{model_id}' is not in the manifest: not shown")
            continue
        if record["kind"] == "bench":
            key = (model_id, _bench_device(record), _options_text((record.get("bench") or {}).get("options")))
            benches.setdefault(key, []).append(record)
        elif record["kind"] in ("eval", "train"):  # a train record holds its test evaluation
            protocol = (record.get("eval") or {}).get("protocol")
            if protocol != specs[model_id].eval.protocol:
                notes.append(f"run {record['run_id']} of {model_id} used protocol {protocol}, not the paper's "
                             f"{specs[model_id].eval.protocol}: not compared")
                continue
            evals.setdefault(model_id, []).append(record)
    rows = []
    for model_id, spec in specs.items():
        found = evals.get(model_id, [])
        chosen = _latest([r for r in found if not r.get("smoke")]) or _latest(found)
        rows.append(model_row(spec, chosen, tables))
    cost = [bench_row(specs[key[0]], _latest(rs)) for key, rs in sorted(benches.items(), key=lambda kv: str(kv[0]))]
    from harness.ctran.report import partial_rows

    return {"models": rows, "cost": cost, "pick": pick_rows(rows, cost), "notes": notes,
            "ctran": partial_rows(evals, specs)}


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
    return sorted(out, key=lambda p: (p["status"] == "smoke", -(p["mAP"] if p["mAP"] is not None else -1)))


# ---------------------------------------------------------------- formatting

def _num(value, digits=2, signed=False):
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pair(ours, paper):
    return "n/a" if ours is None and paper is None else f"{_num(ours, 1)} / {_num(paper, 1)}"


def display(row):
    """The table cells of one model row."""
    ci = row["ci95"]
    status = row["status"] + (f" ({', '.join(row['smoke_reasons'])})" if row["status"] == "smoke" else "") \
        + (" (paper inside CI)" if row.get("reproduced_by") == "CI" else "")
    status += " (selected on test)" if row.get("selection") == "test" else ""
    return {"model": row["model"], "resolution": row["resolution"], "paper_mAP": _num(row["paper_mAP"], 1),
            "mAP": _num(row["mAP"]), "difference": _num(row["difference"], signed=True),
            "ci95": f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "n/a", "status": status,
            "CF1": _pair(row["CF1"], row["paper_CF1"]), "OF1": _pair(row["OF1"], row["paper_OF1"]),
            "peak_vram_mib": _num(row["peak_vram_mib"], 0), "images_per_s": _num(row["images_per_s"], 1),
            "gpu": row["gpu"] or "n/a"}


def display_cost(row):
    ips = _num(row["images_per_s"], 1) + (f" (batch {row['best_batch']})" if row["best_batch"] else "")
    return {"model": row["model"], "resolution": row["resolution"] or "n/a", "params_m": _num(row["params_m"], 1),
            "gflops": _num(row["gflops"], 1), "vram_b1": _num(row["vram_b1"], 0), "vram_b16": _num(row["vram_b16"], 0),
            "options": row["options"], "images_per_s": ips if row["images_per_s"] else "n/a",
            "j_per_image": _num(row["j_per_image"], 3), "fits": row["fits"] or "n/a", "device": row["device"] or "n/a"}


PICK_COLUMNS = [("model", "model"), ("resolution", "resolution"), ("mAP", "ours"), ("paper_mAP", "paper mAP"),
                ("status", "status"), ("precision", "precision"), ("peak_vram_mib", "peak VRAM (MiB)"),
                ("images_per_s", "images/s"), ("fits", "fits in 12 GB"), ("gpu", "GPU")]


def display_pick(row):
    mark = " (bench)" if row["cost_source"] == "bench" else ""
    return {"model": row["model"], "resolution": row["resolution"], "mAP": _num(row["mAP"]),
            "paper_mAP": _num(row["paper_mAP"], 1), "status": row["status"], "precision": row["precision"],
            "peak_vram_mib": _num(row["peak_vram_mib"], 0) + (mark if row["peak_vram_mib"] is not None else ""),
            "images_per_s": _num(row["images_per_s"], 1) + (mark if row["images_per_s"] is not None else ""),
            "fits": row["fits"] or "n/a", "gpu": row["gpu"] or "n/a"}


PICK_NOTES = [
    "Every COCO model with an evaluation record, sorted by our mAP (smoke runs, which are no result, last). "
    "mAP is each paper's own protocol and image set (see the tables above), so rows of different families "
    "differ in protocol as well as model.",
    "peak VRAM and images/s: the evaluation run's own (NVML, at its batch size and precision); where it did not "
    "measure them (CPU, no NVML), the `harness bench` record's at its fastest batch, marked (bench); n/a where "
    "neither measured them. fits in 12 GB: the bench's largest batch within 12 GiB, else the evaluation's peak at "
    "its batch size, else n/a.",
    "Why these numbers cannot come from a wrong split: ASL's issue #23 got mAP 3.7 from their validate.py "
    "(the maintainer: run it on the MS-COCO 2014 multi-label split; the user then got 86.6); here the image set "
    "is built from instances_val2014.json and counted, every record carries the dataset fingerprint, and a run "
    "on anything but the full split is flagged and never counts as reproduced.",
    "Nor from a wrong resolution: in the same thread TResNet-XL-640 scored below 88.4 and the maintainer's answer "
    "was to check the input resolution (their script defaults to 448); here the resolution is the model entry's "
    "(no flag changes it), and a record at another resolution or image set never counts as reproduced.",
    "Nor from a bad upload: ML-Decoder's issues #19 and #34 measured 85.57 for tresnet_l_COCO__448_90_0.pth "
    "until the authors re-uploaded it under the same URL; here every checkpoint loads strictly (a missing, "
    "unexpected or mis-shaped key stops the run; their factory's filtered non-strict load can drop weights "
    "silently) and its sha256 is pinned, or locked at first download, so a file changed under the same URL "
    "is refused instead of evaluated.",
]


def footnotes(family, rows):
    tolerances = sorted({r["tolerance"] for r in rows})
    kinds = {0.1: "released checkpoints", 1.0: "models trained here"}
    tolerance = ", ".join(f"{t:g} mAP points for {kinds.get(t, 'these models')}" for t in tolerances)
    image_set = rows[0]["image_set"] if rows else "all"
    counts = sorted({r["n_images"] for r in rows if r["n_images"]})
    protocols = sorted({r["protocol"] for r in rows if r.get("protocol")}) or [family]
    rules = sorted({(r.get("f1_rule", "ml-gcn"), r.get("threshold", THRESHOLD)) for r in rows})
    if rules in ([], [("ml-gcn", THRESHOLD)]):
        f1_note = f"CF1 / OF1 at threshold {THRESHOLD} on sigmoid scores (ML-GCN definition)"
    else:
        f1_note = "CF1 / OF1: " + "; ".join(
            f"{', '.join(r['model'] for r in rows if (r.get('f1_rule', 'ml-gcn'), r.get('threshold', THRESHOLD)) == k)}"
            f" at threshold {k[1]:g} ({F1_RULES[k[0]]})" for k in rules)
    notes = [
        f"Protocol: {'; '.join(PROTOCOL_DESCRIPTIONS[p] for p in protocols)}.",
        f"Image set: {IMAGE_SETS[image_set]}" + (f"; runs shown used {', '.join(map(str, counts))} images." if counts
                                                  else "."),
        f"{f1_note}; top-3 variants in the JSON output ({TOP3_RULE}).",
        f"Reproduced: |ours - paper| <= {tolerance}, or the paper value inside our 95% bootstrap CI "
        f"(images resampled; such rows say 'paper inside CI'). Smoke runs (random weights, smoke subset, "
        f"--limit, unverified weights) never count.",
    ]
    if family == "ctran":  # their F1 family, not ML-GCN's: harness/ctran/metrics.py
        notes[2] = ("CF1 / OF1: C-Tran's (scikit-learn macro / micro precision and recall at 0.5 over all labels, "
                    "known labels included); over unknown labels only in the partial-label table and the JSON.")
    notes += _tf32_note(rows)
    for r in rows:
        missing = r["classes_without_positives"]
        if missing:
            notes.append(f"{r['model']}: classes without positives: {', '.join(map(str, missing))}.")
        notes += [f"{r['model']}: {n}." for n in r.get("fidelity_notes") or []]
        if r.get("reruns_by_others"):
            confidence = f"; paper value confidence: {r['paper_confidence']}" if r.get("paper_confidence") else ""
            notes.append(f"{r['model']}: re-runs by others: {r['reruns_by_others']}{confidence}.")
    return notes


def _tf32_note(rows):
    """Which runs had TF32 on: it changes GPU float32 results (harness.numerics)."""
    gpu = [r for r in rows if r.get("run_id") and r.get("gpu") not in (None, "cpu")]
    if not gpu:
        return []
    modes = {}
    for r in gpu:
        modes.setdefault(r.get("tf32") or "not recorded", []).append(r["model"])
    said = "; ".join(f"{mode} for {', '.join(models)}" for mode, models in modes.items())
    return [f"TF32 on the GPU: {said} (off: the float32 reference; on: TF32 matmuls and convolutions, as the "
            f"authors' torch 1.9 ran matmuls on Ampere GPUs; each record's eval.numerics has every switch)."]


def cost_footnotes(rows):
    notes = ["images/s and J/image at the fastest batch size measured; n/a: not measured on that run (every "
             "GPU figure is n/a on a CPU run).",
             "fits in 12 GB: the largest batch whose measured peak (NVML, CUDA context included; PyTorch's "
             "reserved memory, which excludes it, only where NVML could not be read: the record says which) "
             "stays within 12 GiB, for inference and for a training step (forward, backward, AdamW)."]
    checked = [r for r in rows if r["memory_check"]["checked"]]
    problems = [f"{r['model']}: {p}" for r in checked for p in r["memory_check"]["problems"]]
    if checked and not problems:
        low = min(r["memory_check"]["gap_mib"][0] for r in checked)
        high = max(r["memory_check"]["gap_mib"][1] for r in checked)
        notes.append(f"NVML and PyTorch peaks agree on every GPU measurement: NVML's peak exceeds PyTorch's max "
                     f"reserved by {low:.0f} to {high:.0f} MiB (the CUDA context and memory outside its allocator).")
    notes += [f"NVML vs PyTorch peaks disagree: {p}." for p in problems]
    for where in sorted({(r["source"], r["measured_on"]) for r in rows if r["measured_on"]}, key=str):
        notes.append(f"Measured on {where[1]} (records in {where[0]}).")
    return notes


def _tables(data):
    """[(title, headers, cells, notes)] for each family, then the cost table."""
    out = []
    for family, title in FAMILIES.items():
        rows = [r for r in data["models"] if r["family"] == family]
        if rows:
            out.append((title, [h for _, h in COLUMNS], [[display(r)[k] for k, _ in COLUMNS] for r in rows],
                        footnotes(family, rows)))
    from harness.ctran.report import tables as ctran_tables

    out += ctran_tables(data.get("ctran"))
    if data.get("pick"):
        out.append(("What a user would pick instead (COCO, by mAP)", [h for _, h in PICK_COLUMNS],
                    [[display_pick(r)[k] for k, _ in PICK_COLUMNS] for r in data["pick"]], PICK_NOTES))
    if data["cost"]:
        out.append(("Cost (synthetic input, random weights)", [h for _, h in COST_COLUMNS],
                    [[display_cost(r)[k] for k, _ in COST_COLUMNS] for r in data["cost"]],
                    cost_footnotes(data["cost"])))
    return out


def to_markdown(data):
    parts = ["# Reproduction report\n"]
    for title, headers, cells, notes in _tables(data):
        parts.append(f"## {title}\n\n{tabulate(cells, headers, tablefmt='pipe', disable_numparse=True)}\n")
        parts.append("\n".join(f"- {n}" for n in notes) + "\n")
    if data.get("compare"):  # optional: `harness report --compare A B`
        from harness.compare import to_markdown as compare_markdown
        parts.append(compare_markdown(data["compare"]))
    if data["notes"]:
        parts.append("## Runs not shown\n\n" + "\n".join(f"- {n}" for n in data["notes"]) + "\n")
    return "\n".join(parts)


def to_latex(data):
    parts = []
    for title, headers, cells, notes in _tables(data):
        parts.append(f"% {title}\n" + tabulate(cells, headers, tablefmt="latex_booktabs", disable_numparse=True))
        parts.append("\n".join(f"% {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def _csv(keys, rows):
    """CSV text: a header of `keys`, then one line per row dict (lists joined with ';', None empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow([";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                         for v in (row.get(k) for k in keys)])
    return buffer.getvalue()


def to_csv(data):
    """One line per model with machine-readable values (lists joined with ';')."""
    keys = [k for k in data["models"][0] if k != "family"] if data["models"] else []
    return _csv(["family", *keys], data["models"])


COST_CSV_KEYS = ["model", "resolution", "params_m", "gflops", "options", "vram_b1", "vram_b16", "images_per_s",
                 "best_batch", "vram_at_best", "j_per_image", "peak_rss_mib", "fits", "device", "measured_on",
                 "source", "run_id"]


def cost_to_csv(data):
    """The cost table, one line per model, device and precision (machine-readable values)."""
    return _csv(COST_CSV_KEYS, data["cost"])


def to_json(data):
    out = {"generator": MARK, **data}
    out["footnotes"] = {f: footnotes(f, [r for r in data["models"] if r["family"] == f])
                        for f in FAMILIES if any(r["family"] == f for r in data["models"])}
    return json.dumps(out, indent=2) + "\n"


def plots(data):
    """{name: PNG bytes}: paper vs ours mAP, and peak VRAM vs images/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    done = [r for r in data["models"] if r["mAP"] is not None and r["paper_mAP"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in done:
        ci = r["ci95"] or [r["mAP"], r["mAP"]]
        # an estimate outside its own interval (tiny sets) gets no negative bar: the interval is drawn as it is
        ax.errorbar(r["paper_mAP"], r["mAP"], yerr=[[max(r["mAP"] - ci[0], 0)], [max(ci[1] - r["mAP"], 0)]], fmt="o",
                    color="grey" if r["status"] == "smoke" else ("tab:green" if r["status"] == "reproduced"
                                                                 else "tab:red"), capsize=3)
        label = r["model"] + (" (smoke)" if r["status"] == "smoke" else "")
        ax.annotate(label, (r["paper_mAP"], r["mAP"]), fontsize=7, xytext=(4, -3), textcoords="offset points")
    values = [v for r in done for v in (r["paper_mAP"], r["mAP"])] or [0, 100]
    low, high = min(values) - 1, max(values) + 1
    ax.plot([low, high], [low, high], "k--", lw=0.8, label="ours = paper")
    ax.set(xlabel="paper mAP", ylabel="our mAP", title="Paper vs ours (green reproduced, red not, grey smoke)")
    ax.legend(loc="upper left", fontsize=8)
    images["paper_vs_ours"] = _png(fig)

    points = [(r["peak_vram_mib"], r["images_per_s"], r["model"]) for r in data["models"]
              if r["peak_vram_mib"] and r["images_per_s"]]
    for r in data["cost"]:  # memory and speed at the same (fastest) batch size
        if r["vram_at_best"] and r["images_per_s"]:
            points.append((r["vram_at_best"], r["images_per_s"], f"{r['model']} (bench, batch {r['best_batch']})"))
    if not points:  # no GPU measurement (CPU only): no empty plot
        plt.close("all")
        return images
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for vram, ips, name in points:
        ax.scatter(vram, ips)
        ax.annotate(name, (vram, ips), fontsize=7, xytext=(4, -3), textcoords="offset points")
    ax.axvline(BUDGET_MIB, color="k", ls="--", lw=0.8, label="12 GiB")
    ax.set(xlabel="peak VRAM (MiB)", ylabel="images/s", title="Memory vs speed")
    ax.legend(fontsize=8)
    images["vram_vs_speed"] = _png(fig)
    plt.close("all")
    return images


def _png(fig):
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _html_table(headers, cells):
    """An HTML table whose smoke rows are shaded (class "smoke")."""
    head = "".join(f"<th>{_escape(h)}</th>" for h in headers)
    rows = []
    for row in cells:
        shade = ' class="smoke"' if any(str(c).startswith("smoke") for c in row) else ""
        rows.append(f"<tr{shade}>" + "".join(f"<td>{_escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


SMOKE_BANNER = ("<p class='banner'>Some rows below are SMOKE runs (random weights, the synthetic subset or "
                "--limit): their numbers test the pipeline and never count as a reproduction.</p>")


def to_html(data):
    body = ["<h1>Reproduction report</h1>"]
    if any(r["status"] == "smoke" for r in data["models"]):
        body.append(SMOKE_BANNER)
    for title, headers, cells, notes in _tables(data):
        body.append(f"<h2>{_escape(title)}</h2>")
        body.append(_html_table(headers, cells))
        body.append("<ul>" + "".join(f"<li>{_escape(n)}</li>" for n in notes) + "</ul>")
    for name, png in plots(data).items():
        body.append(f'<h2>{name.replace("_", " ")}</h2><img alt="{name}" '
                    f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    if data.get("compare"):  # optional: `harness report --compare A B`
        from harness.compare import to_html as compare_html
        body.append(compare_html(data["compare"]))
    if data["notes"]:
        body.append("<h2>Runs not shown</h2><ul>" + "".join(f"<li>{_escape(n)}</li>" for n in data["notes"]) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}tr.smoke{background:#eee;color:#777}"
             ".banner{background:#fff3cd;border:1px solid #e0c060;padding:8px;font-weight:bold}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{HTML_MARK}<title>Reproduction report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _escape(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


RENDERERS = {"markdown": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json, "html": to_html}


def render(data, fmt):
    return mark(RENDERERS[fmt](data), fmt)


EXTENSIONS = {"markdown": "md", "csv": "csv", "latex": "tex", "json": "json", "html": "html"}


def write_all(runs_root="runs", out_dir="reports", manifest=None, tables_dir=None, formats=FORMATS,
              measured_root=DEFAULT_MEASURED, compare=None):
    """Render every format into out_dir/report.<ext> (a rendering, rewritten each time); the paths."""
    from harness.manifest import load_manifest

    specs = manifest if isinstance(manifest, dict) else load_manifest(manifest)
    data = collect(runs_root, specs, load_paper_tables(tables_dir), measured_root=measured_root)
    if compare:  # harness.compare.compare_runs's result
        data["compare"] = compare
    out_dir = Path(out_dir)
    texts = {out_dir / f"report.{EXTENSIONS[fmt]}": render(data, fmt) for fmt in formats}
    if "csv" in formats and data["cost"]:  # the models' CSV has one row per model: the cost table is its own
        texts[out_dir / "report-cost.csv"] = cost_to_csv(data)
    for path in texts:  # every target checked before the first is written
        check_target(path)
    written = [write_report_file(path, text) for path, text in texts.items()]
    if compare:
        from harness.compare import plot_png
        written.append(write_report_png(out_dir / "report-compare.png", plot_png(compare)))
    return written
