"""The `harness` command: argument parsing only; each subcommand lives in harness/commands/."""
import argparse
import errno
import importlib
import logging
import os
import re
import select
import shlex
import sys

from harness import __version__, progress
from harness.errors import Interrupted, UserError
from harness.inputs import environment

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
    "verify": "Check run folders from their own files: digests, image count, labels, every metric, checkpoint.",
    "predict": "Labels of your own images (the model's own eval transform and scoring).",
    "attention": "Query2Label's per-label cross-attention maps on your images (PNG + .npy).",
    "compare": "Paired comparison of two runs on the same images (bootstrap CI, permutation p).",
    "mlspl": "Single-positive-label (MLSPL) preparation, features and training.",
    "ctran": "C-Tran: label-mask training (evaluation with partial labels: `harness eval --known`).",
    "q2l": "Query2Label: train as the authors' main_mlc.py (seeded, resumable, torchrun, 12 GB techniques).",
    "export": "Export a finished run (record, metrics, training curves) to MLflow or Weights & Biases.",
}


# errno -> what to do about it; anything else is named as the system names it.
OS_FIXES = {
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file is needed: name a file",
    errno.EEXIST: "it already exists: choose a new name, or remove it first",
    errno.EACCES: "permission denied: choose a path you may write (or read), or change its permissions",
    errno.EPERM: "operation not permitted: choose a path you own",
    errno.ENOSPC: "the disk is full: free some space or choose another disk",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


# the temporary names files are written under (harness.files, harness.records.write_new): the user named the file
TEMPORARY = re.compile(r"^\.?(?P<name>.+?)\.(?:\d+-)?[0-9a-f]{8}\.tmp$")


def named_path(e):
    """The path an OSError is about, as the user named it: a rename's target, a temporary file's own name."""
    path = getattr(e, "filename2", None) or getattr(e, "filename", None)
    if not path:
        return ""
    path = str(path)
    head, _, name = path.rpartition("/")
    match = TEMPORARY.match(name)
    return f"{head}/{match['name']}" if match and head else match["name"] if match else path


def os_error_line(e):
    """One line for an OSError: the path and the real cause, with its fix."""
    where = f" {named_path(e)}" if named_path(e) else ""
    if e.errno in OS_FIXES:
        return f"{e.strerror or e}{':' + where if where else ''}; {OS_FIXES[e.errno]}"
    if isinstance(e, (ConnectionError, TimeoutError)):
        return f"network: {e}; check the connection, or place the files by hand"
    return f"{e.strerror or e}{':' + where if where else ''}"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad flag said in one line (the problem, then where the flags are described)
    instead of the usage block and the line; `--help` is unchanged. Subcommands inherit it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(only=None):
    """The whole parser; with `only`, the arguments of that subcommand alone (the others are listed
    by name and help, their modules not imported: a command's module may load torch)."""
    parser = _OneLineParser(
        prog="harness", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reproduce published multi-label classification results and compare them with the papers.",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    add_output_flags(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # the examples keep their lines
        if only is None or name == only:
            module = importlib.import_module(f"harness.commands.{name}")  # lazy: see the docstring
            p.description = module.__doc__ or help_text
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
        for each in _with_subcommands(p):  # `mlspl train -q` too
            add_output_flags(each, argparse.SUPPRESS)
    parser.set_defaults(quiet=False, verbose=False, no_progress=False)
    return parser


def add_output_flags(parser, default):
    """-q/--quiet, -v/--verbose and --no-progress, before or after the subcommand (SUPPRESS: a
    subcommand's default never hides the same flag given before it)."""
    have = parser._option_string_actions
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="warnings and errors only: no progress, no info lines")
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="also the library's debug lines")
    if "--no-progress" not in have:
        parser.add_argument("--no-progress", action="store_true", default=default, help="no progress bars")


def _with_subcommands(parser):
    """The parser and, depth first, the parsers of its own subcommands (mlspl train, ctran train)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _with_subcommands(sub)


def chosen_command(argv):
    """The subcommand named in argv ("" when none): the only command module main() imports."""
    first = next((a for a in argv if not a.startswith("-")), "")
    return first if first in COMMANDS else ""


class _ConsoleLines(logging.Handler):
    """The library's log as the CLI shows it, one plain line each: what a step is doing (INFO) on
    stdout, what the user should know of (WARNING and up) and progress lines (harness.progress, beside
    the bars) on stderr, so stdout holds a command's result alone; the streams of the moment."""

    def emit(self, record):
        to_stderr = record.levelno >= logging.WARNING or record.name == progress.logger.name
        stream = sys.stderr if to_stderr else sys.stdout
        stream.write(record.getMessage() + "\n")
        stream.flush()


def configure_logging(args):
    """The library logs (harness.*); the CLI shows INFO and up (WARNING and up with --quiet)."""
    logger = logging.getLogger("harness")
    logger.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    if not any(isinstance(h, _ConsoleLines) for h in logger.handlers):
        logger.addHandler(_ConsoleLines())
    if args.quiet:
        args.no_progress = True
    progress.set_bars(not args.no_progress)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=chosen_command(argv))
    args = parser.parse_args(argv)
    configure_logging(args)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    finished = False
    try:
        environment.check_all()  # every HARNESS_* variable, whether or not this command reads it
        code = args._run(args) or 0
        finished = True
        return code
    except UserError as e:
        finished = getattr(e, "on_every_rank", False)  # torchrun's ranks all stopped here: they leave together
        if not getattr(e, "shown_elsewhere", False):  # and the rank that failed says it
            print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path, permission, full disk or network problem: the user's to fix, not a bug
        if isinstance(e, BrokenPipeError) and _stdout_closed():  # `harness models | head`: the reader stopped
            return 141  # as a shell reports a program that SIGPIPE ended; no error line, nothing went wrong here
        finished = getattr(e, "on_every_rank", False)
        if not getattr(e, "shown_elsewhere", False):
            print(f"harness {args.command}: error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        if isinstance(e, Interrupted) and os.environ.get("RANK", "0") == "0":
            _say_how_to_continue(e, argv)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # only a command that loaded torch can have joined a group
            from harness.distributed import leave_process_group  # lazy: it loads torch, which --help must not

            leave_process_group(finished)


def _stdout_closed():
    """Whether stdout is a pipe whose reader has gone (`| head` that closed); stdout then points at
    devnull, so the interpreter's last flush does not fail again. A network's broken pipe is not this."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, ValueError, OSError):  # no poll (Windows), or stdout is not a file
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return closed


def _say_how_to_continue(interrupted, argv):
    for line in interrupted.saved:
        print(line, file=sys.stderr)
    if interrupted.resume is None:
        return
    command = continue_command(argv, interrupted.resume, interrupted.drop)
    size = os.environ.get("WORLD_SIZE", "1").strip()  # checked at start; never a traceback while stopping
    if size.isdigit() and int(size) > 1:  # the launcher's own flags are not ours to repeat
        print(f"continue with your torchrun command, the same processes, ending in: {command.removeprefix('harness ')}",
              file=sys.stderr)
    else:
        print(f"continue with: {command}", file=sys.stderr)


def continue_command(argv, flags, drop=()):
    """The command as typed, with `flags` in place of any of the same name (a flag's value is the next
    word that is not a flag, as argparse reads an optional value) and the words of `drop` left out."""
    names = {f for f in flags if f.startswith("--")}
    words, skip = [], False
    for k, word in enumerate(argv):
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in names:
            nxt = argv[k + 1] if k + 1 < len(argv) else None
            skip = "=" not in word and nxt is not None and not nxt.startswith("-") and nxt not in drop and \
                nxt not in COMMANDS
            continue
        if word not in drop:
            words.append(word)
    return shlex.join(["harness", *words, *flags])


if __name__ == "__main__":
    sys.exit(main())
