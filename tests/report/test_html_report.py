"""The HTML report reads at a glance: what was run comes first, smoke rows in a warning colour,
the models with no run yet folded away, and a sentence where a plot is left out."""
import numpy as np
import pytest
from fake_records import eval_record, problem

from harness import records, report
from harness.manifest import load_manifest
from harness.report.html import NO_VRAM_PLOT

pytestmark = pytest.mark.usefixtures("plots_not_drawn")  # the page's text; test_report.py renders plots for real
SPECS = load_manifest()


def _run(root, model_id, smoke, vram=3500.0):
    _, labels = problem(150, 5, seed=2)
    scores = np.random.default_rng(2).random(labels.shape).astype(np.float32)
    run_dir = records.new_run_dir(root, model_id)
    rec = eval_record(run_dir, scores, labels, model_id=model_id, smoke=smoke)
    rec["measurement"]["peak_vram_mib"] = vram
    records.write_record(run_dir, rec)


def _html(root):
    return report.render(report.collect(root, SPECS, report.load_paper_tables()), "html")


def test_what_was_run_leads_and_the_rest_is_folded(tmp_path):
    _run(tmp_path, "q2l-r101-448", smoke=False)
    _run(tmp_path, "q2l-r101-576", smoke=True)
    html = _html(tmp_path)
    lead = html.index("What was run: 2 of")
    # 150 images claimed as a full run: its files say otherwise (harness.report.verify)
    assert lead < html.index("<table>") and "(1 failed checks, 1 smoke)" in html
    first_family = html.index("<h2>Query2Label</h2>")
    assert first_family < html.index("<h2>Not run yet</h2>")  # families with a run first
    q2l = html[first_family:html.index("</ul>", first_family)]
    assert q2l.count("no run yet</td>") == len([s for s in SPECS.values() if s.family == "q2l"]) - 2
    assert "<details><summary>4 more model(s) with no run yet</summary>" in q2l  # folded under the run rows
    assert q2l.index("q2l-r101-448") < q2l.index("<details>")
    rest = html[html.index("<h2>Not run yet</h2>"):]
    assert "<details><summary>ASL: " in rest and "<details><summary>MLSPL" in rest  # none of theirs ran


def test_smoke_rows_are_amber_not_grey(tmp_path):
    _run(tmp_path, "q2l-r101-576", smoke=True)
    html = _html(tmp_path)
    assert '<tr class="smoke"><td>q2l-r101-576</td>' in html
    style = html[html.index("<style>"):html.index("</style>")]
    assert "tr.smoke{background:#fde9c8" in style and "#eee" not in style and "#777" not in style
    assert "Rows in amber are SMOKE runs" in html


def test_a_dropped_plot_is_said(tmp_path):
    _run(tmp_path, "q2l-r101-448", smoke=False, vram=None)
    html = _html(tmp_path)
    assert NO_VRAM_PLOT.split(":")[0] in html and 'alt="vram_vs_speed"' not in html
    _run(tmp_path, "q2l-r101-576", smoke=False, vram=4000.0)
    html = _html(tmp_path)
    assert NO_VRAM_PLOT.split(":")[0] not in html and 'alt="vram_vs_speed"' in html


def test_a_report_without_runs_says_where_they_would_be(tmp_path):
    html = _html(tmp_path / "empty")
    assert "No run record was found" in html and "--runs" in html
