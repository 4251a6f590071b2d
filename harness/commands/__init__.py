"""The `harness` subcommands: each module's add_arguments(parser) and run(args) (CLI glue only).

One meaning per flag across commands: `--runs DIR` is always the runs folder (written by eval,
bench, reproduce, ctran and mlspl train; read by report and compare; `--out` is its old spelling
on the commands that write runs), `--out PATH` the file or folder a command writes that is not a
runs folder, `--coco-root DIR` the COCO 2014 root, `--device auto|cpu|cuda` (auto: cuda when visible).
"""


def add_runs_argument(parser):
    parser.add_argument("--runs", "--out", dest="runs", default="runs", metavar="DIR",
                        help="runs folder (default: runs/); --out is the old spelling")
