"""The report's renderings: markdown, csv, latex, json and html, each with its footnotes, and
write_all into a folder (only new files or earlier reports are replaced)."""
import csv
import io
import json
import math
from pathlib import Path

from tabulate import tabulate

from harness.ctran.report import tables as ctran_tables
from harness.explain.compare import markdown_text, plot_png
from harness.explain.compare import to_markdown as compare_markdown
from harness.manifest import load_manifest
from harness.metrics import F1_RULES, PROTOCOL_DESCRIPTIONS, THRESHOLD, TOP3_RULE
from harness.q2l.report import tables as q2l_trained_tables
from harness.records import code_version, utc_now
from harness.report.files import (
    MARK,
    check_target,
    mark,
    write_report_file,
    write_report_png,
)
from harness.report.html import html_page
from harness.report.rows import (
    COLUMNS,
    COST_COLUMNS,
    DEFAULT_MEASURED,
    FAMILIES,
    IMAGE_SETS,
    collect,
    load_paper_tables,
)

FORMATS = ("markdown", "csv", "latex", "json", "html")



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
        + (f" ({'; '.join(row['problems'])})" if row.get("problems") else "") \
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
    "Every COCO model with an evaluation record, sorted by our mAP (smoke runs and runs whose files fail or escape "
    "their checks, which are no result, last). "
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
        "Each status is read from the run's files, not its flags: the sha256 of its arrays, its image count "
        "against the whole image set, its labels against its dataset fingerprint, its mAP recomputed from its "
        "own scores, its checkpoint against the pin or lock. 'failed checks' names what does not hold, "
        "'unverifiable' what could not be checked (`harness verify RUN` prints every finding).",
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
    """Which runs had TF32 on: it changes GPU float32 results (harness.eval.numerics)."""
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

    out += ctran_tables(data.get("ctran"))
    out += q2l_trained_tables(data.get("q2l_trained"))
    if data.get("pick"):
        out.append(("What a user would pick instead (COCO, by mAP)", [h for _, h in PICK_COLUMNS],
                    [[display_pick(r)[k] for k, _ in PICK_COLUMNS] for r in data["pick"]], PICK_NOTES))
    if data["cost"]:
        out.append(("Cost (synthetic input, random weights)", [h for _, h in COST_COLUMNS],
                    [[display_cost(r)[k] for k, _ in COST_COLUMNS] for r in data["cost"]],
                    cost_footnotes(data["cost"])))
    return out


def to_markdown(data):
    """Markdown; every string from a record is text, never markup (markdown_text), as in html, csv and latex."""
    parts = ["# Reproduction report\n"]
    for title, headers, cells, notes in _tables(data):
        table = tabulate([[markdown_text(c) for c in row] for row in cells], [markdown_text(h) for h in headers],
                         tablefmt="pipe", disable_numparse=True)
        parts.append(f"## {markdown_text(title)}\n\n{table}\n")
        parts.append("\n".join(f"- {markdown_text(n)}" for n in notes) + "\n")
    if data.get("compare"):  # optional: `harness report --compare A B`
        parts.append(compare_markdown(data["compare"]))
    if data["notes"]:
        parts.append("## Runs not shown\n\n" + "\n".join(f"- {markdown_text(n)}" for n in data["notes"]) + "\n")
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
        writer.writerow([_csv_text(";".join(map(str, v))) if isinstance(v, list) else ("" if v is None else
                         _csv_text(v)) for v in (row.get(k) for k in keys)])
    return buffer.getvalue()


def _csv_text(value):
    """A record's string as a spreadsheet shows it as text: one that would start a formula (=, +, -, @)
    gets a leading apostrophe; numbers stay numbers."""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(data):
    """One line per model with machine-readable values: the CI in two columns (ci95_low, ci95_high),
    other lists joined with ';'."""
    rows = [_ci_columns(r) for r in data["models"]]
    keys = [k for k in rows[0] if k != "family"] if rows else []
    return _csv(["family", *keys], rows)


def _ci_columns(row):
    out = {}
    for k, v in row.items():
        if k == "ci95":
            out["ci95_low"], out["ci95_high"] = v if v else (None, None)
        else:
            out[k] = v
    return out


COST_CSV_KEYS = ["model", "resolution", "params_m", "gflops", "options", "vram_b1", "vram_b16", "images_per_s",
                 "best_batch", "vram_at_best", "j_per_image", "peak_rss_mib", "fits", "device", "measured_on",
                 "source", "run_id"]


def cost_to_csv(data):
    """The cost table, one line per model, device and precision (machine-readable values)."""
    return _csv(COST_CSV_KEYS, data["cost"])


REPORT_SCHEMA = 1  # harness/report/report.schema.json describes this version


def to_json(data):
    """The report as one JSON object (harness/report/report.schema.json): what produced it, then the rows."""
    code = code_version()
    out = {"generator": MARK, "schema": REPORT_SCHEMA, "harness_version": code["harness"],
           "git_commit": code["git_commit"], "git_dirty": code["git_dirty"], "generated_at": utc_now(), **data}
    out["footnotes"] = {f: footnotes(f, [r for r in data["models"] if r["family"] == f])
                        for f in FAMILIES if any(r["family"] == f for r in data["models"])}
    return json.dumps(_finite(out), indent=2, allow_nan=False) + "\n"


def _finite(value):
    """JSON has no NaN or infinity: such a number is null, so the file is valid JSON always."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value



def to_html(data):
    return html_page(data, _tables(data))


RENDERERS = {"markdown": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json, "html": to_html}


def render(data, fmt):
    return mark(RENDERERS[fmt](data), fmt)


EXTENSIONS = {"markdown": "md", "csv": "csv", "latex": "tex", "json": "json", "html": "html"}


def write_all(runs_root="runs", out_dir="tables", manifest=None, tables_dir=None, formats=FORMATS,
              measured_root=DEFAULT_MEASURED, compare=None):
    """Render every format into out_dir/report.<ext> (a rendering, rewritten each time); the paths."""
    specs = manifest if isinstance(manifest, dict) else load_manifest(manifest)
    data = collect(runs_root, specs, load_paper_tables(tables_dir), measured_root=measured_root)
    if compare:  # harness.explain.compare.compare_runs's result
        data["compare"] = compare
    out_dir = Path(out_dir)
    texts = {out_dir / f"report.{EXTENSIONS[fmt]}": render(data, fmt) for fmt in formats}
    if "csv" in formats and data["cost"]:  # the models' CSV has one row per model: the cost table is its own
        texts[out_dir / "report-cost.csv"] = cost_to_csv(data)
    for path in texts:  # every target checked before the first is written
        check_target(path)
    written = [write_report_file(path, text) for path, text in texts.items()]
    if compare:
        written.append(write_report_png(out_dir / "report-compare.png", plot_png(compare)))
    return written
