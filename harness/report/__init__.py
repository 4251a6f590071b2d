"""Tables of the run records against the papers: markdown, csv, latex, json or html (with plots).

Reads only run records, the manifest (the model list and paper numbers) and tables/paper/*.csv;
it never runs a model and never imports torch. One table per family: per model the latest
complete non-smoke evaluation wins; with only smoke runs the latest smoke run is shown as smoke,
which never counts as reproduced.

    judge.py   whether a record counts: smoke reasons, status against the paper
    rows.py    rows from the records: models, costs, "what a user would pick instead"
    render.py  markdown, csv, latex, json, html and their footnotes; write_all
    plots.py   the PNG plots
    files.py   writing only new files or earlier reports
"""
from harness.report.files import write_report_file, write_report_png
from harness.report.judge import STATUSES, smoke_reasons, status_of
from harness.report.plots import plots
from harness.report.render import (
                                   EXTENSIONS,
                                   FORMATS,
                                   display,
                                   display_cost,
                                   footnotes,
                                   render,
                                   to_json,
                                   write_all,
)
from harness.report.rows import (
                                   COST_COLUMNS,
                                   DEFAULT_MEASURED,
                                   bench_row,
                                   collect,
                                   load_paper_tables,
                                   model_row,
)

__all__ = ["COST_COLUMNS", "DEFAULT_MEASURED", "EXTENSIONS", "FORMATS", "STATUSES", "bench_row", "collect",
           "display", "display_cost", "footnotes", "load_paper_tables", "model_row", "plots", "render",
           "smoke_reasons", "status_of", "to_json", "write_all", "write_report_file", "write_report_png"]
