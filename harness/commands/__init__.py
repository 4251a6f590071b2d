"""The `harness` subcommands: each module's add_arguments(parser) and run(args) (CLI glue only).

One meaning per flag across commands: `--runs DIR` is always the runs folder (written by eval,
bench, reproduce, ctran and mlspl train; read by report and compare; `--out` is its old spelling
on the commands that write runs), `--out PATH` the file or folder a command writes that is not a
runs folder, `--coco-root DIR` the COCO 2014 root, `--device auto|cpu|cuda` (auto: cuda when visible).
`--tables` is gone (it named an output folder in `reproduce` and an input in `report`): it still works
in both, with a line naming its new spelling (`reproduce --report-dir`, `report --paper-tables`).
"""
import argparse
import sys


class _RunsFolder(argparse.Action):
    """--runs, or --out its old spelling: the two naming different folders is a mistake, not a choice."""

    def __call__(self, parser, namespace, value, option_string=None):
        earlier = getattr(namespace, "_runs_flag", None)
        if earlier and earlier[0] != option_string and earlier[1] != value:
            parser.error(f"{earlier[0]} {earlier[1]} and {option_string} {value} name two runs folders; "
                         f"pass --runs only (--out is its old spelling)")
        namespace._runs_flag = (option_string, value)
        setattr(namespace, self.dest, value)


def add_runs_argument(parser):
    parser.add_argument("--runs", "--out", dest="runs", default="runs", metavar="DIR", action=_RunsFolder,
                        help="runs folder (default: runs/); --out is the old spelling")


class OldSpelling(argparse.Action):
    """A flag's old spelling: it still works, with one line on stderr naming the new one."""

    def __init__(self, option_strings, dest, new=None, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        print(f"{parser.prog}: {option_string} is the old spelling of {self.new}; it will go: pass {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, value)
