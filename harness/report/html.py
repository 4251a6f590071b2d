"""The HTML report: what was run first, smoke rows in a warning colour, the rows of models with no run
yet folded, the plots (and a sentence where one is left out), each training run's curves."""
import base64

from harness.explain.compare import to_html as compare_html
from harness.report.files import HTML_MARK
from harness.report.plots import curve_plots, plots


def _html_table(headers, cells):
    """An HTML table whose smoke rows stand out in a warning colour (class "smoke"), and rows whose
    files fail their checks in red (class "failed"; "unverifiable" ones as smoke)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    rows = []
    for row in cells:
        shade = ' class="failed"' if any(str(c).startswith("failed checks") for c in row) else \
            ' class="smoke"' if any(str(c).startswith(("smoke", "unverifiable")) for c in row) else ""
        rows.append(f"<tr{shade}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


SMOKE_BANNER = ("<p class='banner'>Rows in amber are SMOKE runs (random weights, the synthetic subset, "
                "--limit, or weights that are not the release): their numbers test the pipeline and never count "
                "as a reproduction.</p>")
FAILED_BANNER = ("<p class='banner failed'>Rows in red FAIL THEIR CHECKS: their files do not show what their records "
                 "say (the status names each finding; `harness verify RUN` prints them all). They never count as a "
                 "reproduction.</p>")
NO_VRAM_PLOT = ("No memory vs speed plot: no run or bench record here measured peak VRAM (CPU runs, or NVML could "
                "not be read). `harness bench MODEL` on a GPU measures it.")
STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 6px}"
         "tr.smoke{background:#fde9c8;color:#5c3b00}tr.smoke td:first-child{border-left:4px solid #d97706}"
         "tr.failed{background:#fbe3e3;color:#800}tr.failed td:first-child{border-left:4px solid #b91c1c}"
         ".banner{background:#fde9c8;border:2px solid #d97706;padding:8px;font-weight:bold}"
         ".banner.failed{background:#fbe3e3;border-color:#b91c1c}"
         ".lead{font-size:15px;background:#eef4fb;border:1px solid #b9cfe8;padding:8px}"
         ".note{color:#444;font-style:italic}details{margin:6px 0 12px}summary{cursor:pointer;color:#444}"
         "img{max-width:100%}")


def _no_run(headers, row):
    """A row with nothing measured: its status says so, or (tables without one, C-Tran's) every
    'ours' cell is n/a or '-'."""
    if "status" in headers:
        return row[headers.index("status")] == "no run yet"
    ours = [str(c) for h, c in zip(headers, row) if "ours" in h]
    return bool(ours) and all(c.startswith(("n/a", "-")) for c in ours)


def what_was_run(data):
    """The report's first sentence: what the records hold, before any table."""
    ran = [r for r in data["models"] if r["run_id"]]
    if not ran and not data["cost"]:
        return ("No run record was found: every model has no run yet. Pass --runs DIR, the folder `harness eval` "
                "wrote (make smoke: --runs runs/smoke/runs).")
    counts = {}
    for r in ran:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    said = ", ".join(f"{n} {status}" for status, n in counts.items())
    parts = [f"{len(ran)} of {len(data['models'])} models have a run" + (f" ({said})" if said else "")]
    if data["cost"]:
        parts.append(f"{len(data['cost'])} cost measurement(s) from `harness bench`")
    if data.get("curves"):
        parts.append(f"training curves of {len(data['curves'])} run(s)")
    return "What was run: " + "; ".join(parts) + ". Models with no run yet are folded under each table."


def html_page(data, tables):
    """The page; tables: render._tables(data), [(title, headers, cells, notes)]."""
    body = ["<h1>Reproduction report</h1>", f"<p class='lead'>{escape(what_was_run(data))}</p>"]
    if any(r["status"] == "failed checks" for r in data["models"]):
        body.append(FAILED_BANNER)
    if any(r["status"] == "smoke" for r in data["models"]):
        body.append(SMOKE_BANNER)
    idle_tables = []
    for title, headers, cells, notes in tables:
        ran = [c for c in cells if not _no_run(headers, c)]
        idle = [c for c in cells if _no_run(headers, c)]
        if not ran:  # nothing measured in this family: folded at the end, after what was
            idle_tables.append((title, headers, idle, notes))
            continue
        body.append(f"<h2>{escape(title)}</h2>")
        body.append(_html_table(headers, ran))
        if idle:
            body.append(f"<details><summary>{len(idle)} more model(s) with no run yet</summary>"
                        f"{_html_table(headers, idle)}</details>")
        body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    images = plots(data)
    for name, png in images.items():
        body.append(_html_image(name.replace("_", " "), png, alt=name))
    if data["cost"] or any(r["run_id"] for r in data["models"]):
        if "vram_vs_speed" not in images:
            body.append(f"<p class='note'>{escape(NO_VRAM_PLOT)}</p>")
    curves = curve_plots(data.get("curves") or [])
    if curves:
        body.append("<h2>Training curves</h2><p class='note'>From each training run's TensorBoard events "
                    "(RUN/tensorboard; `tensorboard --logdir RUN/tensorboard` shows them live).</p>")
        body += [_html_image(name, png, level=3) for name, png in curves.items()]
    if data.get("compare"):  # optional: `harness report --compare A B`
        body.append(compare_html(data["compare"]))
    if idle_tables:
        body.append("<h2>Not run yet</h2>")
        for title, headers, cells, notes in idle_tables:
            body.append(f"<details><summary>{escape(title)}: {len(cells)} model(s), none run yet</summary>"
                        f"{_html_table(headers, cells)}<ul>"
                        + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></details>")
    if data["notes"]:
        body.append("<h2>Runs not shown</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in data["notes"]) + "</ul>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{HTML_MARK}<title>Reproduction report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _html_image(title, png, level=2, alt=None):
    return (f'<h{level}>{escape(title)}</h{level}><img alt="{escape(alt or title)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def escape(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
