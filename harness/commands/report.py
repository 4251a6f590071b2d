"""Render the run records into tables against the papers (one per family: paper mAP, ours, the
difference, 95% CI, status, CF1/OF1, peak VRAM, images/s, GPU; and a cost table from bench runs).
Reads only the records, the manifest and tables/paper/*.csv; never runs a model."""
import sys
from pathlib import Path

from harness.errors import UserError


def add_arguments(parser):
    parser.add_argument("--format", choices=("markdown", "csv", "latex", "json", "html", "all"), default="markdown",
                        help="'all' writes report.{md,csv,tex,json,html} into the folder --out (default tables/)")
    parser.add_argument("--runs", default="runs", help="the runs folder (default: runs)")
    parser.add_argument("--out", metavar="FILE", help="write here instead of printing")
    parser.add_argument("--tables", metavar="DIR", help="the paper tables (default: tables/paper of the repository)")
    parser.add_argument("--manifest", metavar="FILE", help="the model manifest (default: weights_manifest.yaml)")


def run(args):
    from harness import report
    from harness.manifest import load_manifest

    if args.tables and not Path(args.tables).is_dir():
        raise UserError(f"paper tables folder not found: {args.tables}; pass --tables DIR with the *.csv files")
    if not Path(args.runs).is_dir():
        print(f"harness report: no runs folder {args.runs}: every model shows 'no run yet'", file=sys.stderr)
    if args.format == "all":
        for path in report.write_all(args.runs, args.out or "tables", args.manifest, args.tables):
            print(f"written: {path}", file=sys.stderr)
        return
    data = report.collect(args.runs, load_manifest(args.manifest), report.load_paper_tables(args.tables))
    text = report.render(data, args.format)
    if args.out is None:
        sys.stdout.write(text)
        return
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; pass a file name such as {out / ('report.' + args.format)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written: {out}", file=sys.stderr)
