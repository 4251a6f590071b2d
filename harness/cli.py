"""The `harness` command: argument parsing only; each subcommand lives in harness/commands/."""
import argparse
import importlib
import sys

from harness import __version__
from harness.errors import UserError

# Subcommand name -> module in harness.commands exposing add_arguments(parser) and run(args).
COMMANDS = {
    "models": "List the models of the manifest with their paper mAP and what each needs.",
    "download": "Fetch and verify checkpoints (and features) into the cache.",
    "data": "Prepare data: the COCO 2014 layout or the synthetic smoke subset.",
    "eval": "Evaluate one model on COCO val2014 and write a run record.",
    "reproduce": "Run a whole reproduction (download, evaluate, measure, report).",
    "bench": "Measure speed and memory on synthetic input.",
    "metrics": "Compute a paper's metrics from saved scores and labels.",
    "rescore": "Recompute the metrics of a saved run from its scores.",
    "report": "Render the run records into tables against the papers.",
    "predict": "Labels of your own images (the model's own eval transform and scoring).",
    "attention": "Query2Label's per-label cross-attention maps on your images (PNG + .npy).",
    "compare": "Paired comparison of two runs on the same images (bootstrap CI, permutation p).",
    "mlspl": "Single-positive-label (MLSPL) preparation, features and training.",
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Reproduce published multi-label classification results and compare them with the papers.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"harness.commands.{name}")
        p = sub.add_parser(name, help=help_text, description=module.__doc__ or help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return args._run(args) or 0
    except UserError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path, permission, full disk or network problem: the user's to fix, not a bug
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"harness {args.command}: error: {e.strerror or e}{where}; check the path, its permissions "
              f"and free space (or the network)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
