"""Render the run records into tables against the papers (one per family: paper mAP, ours, the
difference, 95% CI, status, CF1/OF1, peak VRAM, images/s, GPU; and a cost table from bench runs).
Reads only the records, the manifest and tables/paper/*.csv; never runs a model."""
import argparse
import sys
from pathlib import Path

from harness import report
from harness.commands import OldSpelling
from harness.errors import UserError
from harness.explain.compare import compare_runs, find_run, load_run, plot_png
from harness.inputs.paths import what_it_is
from harness.manifest import load_manifest


def add_arguments(parser):
    parser.add_argument("--format", choices=("markdown", "csv", "latex", "json", "html", "all"), default="markdown",
                        help="'all' writes report.{md,csv,tex,json,html} into the folder --out (default tables/)")
    parser.add_argument("--runs", default="runs", help="the runs folder (default: runs)")
    parser.add_argument("--out", metavar="FILE", help="write here instead of printing")
    parser.add_argument("--measured", metavar="DIR", default=None,
                        help="measured records committed with the code, also read (default: tables/measured of "
                             "the repository; 'none' to leave them out)")
    parser.add_argument("--paper-tables", dest="paper_tables", metavar="DIR",
                        help="the paper tables (default: tables/paper of the repository)")
    parser.add_argument("--tables", dest="paper_tables", action=OldSpelling, new="--paper-tables", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", metavar="FILE", help="the model manifest (default: weights_manifest.yaml)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"),
                        help="add a paired comparison of two models' latest runs (or two run folders), as "
                             "`harness compare`, with the per-class AP difference chart")
    parser.add_argument("--compare-protocol", choices=("q2l", "asl", "mlspl"),
                        help="with --compare: score both with this protocol (needed when the runs' differ)")
    parser.add_argument("--compare-common-images", action="store_true",
                        help="with --compare: on the images both runs scored (Q2L's 40,504 vs ASL's 40,137)")


def run(args):
    kind = what_it_is(args.runs)
    if kind not in ("a folder", "missing"):  # a file, a device, a symlink loop: one line, not a traceback
        raise UserError(f"--runs {args.runs} is {kind or 'a file'}, not a runs folder; pass the folder eval wrote into")
    _render(args)
    if not any(Path(args.runs).glob("*/*/record.json")):  # after the report: an error, if any, comes alone
        print(f"harness report: {_no_runs_line(Path(args.runs))}", file=sys.stderr)


def _render(args):
    if args.paper_tables and not Path(args.paper_tables).is_dir():
        raise UserError(f"paper tables folder not found: {args.paper_tables}; pass --paper-tables DIR with the *.csv files")
    if Path(args.runs).exists() and not Path(args.runs).is_dir():
        raise UserError(f"--runs {args.runs} is a file, not a runs folder; pass the folder `harness eval` wrote (e.g. runs)")
    measured = report.DEFAULT_MEASURED if args.measured is None else (
        None if args.measured.lower() == "none" else Path(args.measured))
    if measured is not None and args.measured is not None and not measured.is_dir():
        raise UserError(f"measured records folder not found: {measured}; pass --measured DIR or --measured none")
    compare = None
    if args.compare:
        compare = compare_runs(*(load_run(find_run(args.runs, name)) for name in args.compare),
                               protocol=args.compare_protocol, common_images=args.compare_common_images,
                               progress=not args.no_progress)
    if args.format == "all":
        if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
            raise UserError(f"--format all writes five files into a folder, but --out {args.out} is a file; "
                            f"pass a folder, e.g. --out tables")
        for path in report.write_all(args.runs, args.out or "tables", args.manifest, args.paper_tables,
                                     measured_root=measured, compare=compare):
            print(f"written: {path}", file=sys.stderr)
        return
    data = report.collect(args.runs, load_manifest(args.manifest), report.load_paper_tables(args.paper_tables),
                          measured_root=measured)
    if compare:
        data["compare"] = compare
    text = report.render(data, args.format)
    if args.out is None:
        sys.stdout.write(text)
        return
    out = report.write_report_file(args.out, text)
    print(f"written: {out}", file=sys.stderr)
    if compare:  # the chart as its own PNG too, beside the report

        chart = report.write_report_png(out.with_name(f"{out.stem}-compare.png"), plot_png(compare))
        print(f"written: {chart}", file=sys.stderr)


def _no_runs_line(runs):
    """No record under --runs: say so, and name the runs folders that do hold records (`make smoke`
    writes runs/smoke/runs, which the default --runs runs does not read)."""
    where = runs if runs.is_dir() else Path(".")
    patterns = ("/".join(["*"] * depth) + "/record.json" for depth in range(2, 6))  # bounded: no walk of COCO
    found = sorted({str(p.parent.parent.parent) for pattern in patterns for p in where.glob(pattern)})[:3]
    line = f"no run record under {runs}/ (every model shows 'no run yet')"
    if found:
        return line + f"; records are under {' and '.join(found)}: pass --runs " + found[0]
    return line + "; pass --runs DIR, the folder `harness eval` wrote (make smoke: --runs runs/smoke/runs)"
