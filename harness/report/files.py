"""Writing report files: a new file, or one that an earlier `harness report` wrote, and nothing else.

Every rendering carries a mark a report can be told by (a comment, a meta tag, a JSON key, or the
CSV header this harness writes), so `--out` can never replace a run's record, its scores or any
other file of the user's.
"""
import json
import os
from pathlib import Path

from harness.errors import UserError
from harness.files import write_atomically
from harness.inputs.paths import what_it_is

MARK = "written by harness report"
MARKS = {"markdown": f"<!-- {MARK} -->\n", "latex": f"% {MARK}\n"}
HTML_MARK = f'<meta name="generator" content="{MARK}">'
CSV_HEADS = ("family,", "model,resolution,params_m,")  # the models' CSV and the cost CSV


def mark(text, fmt):
    """The rendering with its mark (JSON and HTML carry theirs inside; see report.to_json/to_html)."""
    return MARKS.get(fmt, "") + text


def is_report(path):
    """True when `path` holds a report this harness wrote (read from its head only)."""
    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", "replace")
    if head.startswith(tuple(MARKS.values())) or HTML_MARK in head or head.startswith(CSV_HEADS):
        return True
    if head.lstrip().startswith("{"):
        try:
            return json.loads(Path(path).read_text()).get("generator") == MARK
        except (ValueError, UnicodeDecodeError, AttributeError):
            return False
    return False


def check_target(path):
    """A UserError unless `path` is free, or holds a report this harness wrote."""
    path = Path(path)
    kind = what_it_is(path)
    if kind == "a folder":
        raise UserError(f"--out {path} is a folder; pass a file name such as {path / 'report.md'}")
    if kind not in (None, "missing"):  # a FIFO would block the read below; a device is nobody's report
        raise UserError(f"--out {path} is {kind}, not a file; pass a new file name")
    if kind is None and not is_report(path):
        raise UserError(f"--out {path} exists and is not a report written by `harness report` (a run record, "
                        f"scores or a file of yours?): refused, nothing was overwritten; pass a new file name")


def write_report_file(path, text):
    """Write `text` to `path` (atomically) once `check_target` allows it."""
    path = Path(path)
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)
    return path


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_report_png(path, png):
    """Write a chart: a new file, or one that already holds a PNG (an earlier chart), nothing else."""
    path = Path(path)
    if path.exists():
        with open(path, "rb") as f:
            if f.read(8) != PNG_MAGIC:
                raise UserError(f"{path} exists and is not a chart this report wrote: refused, nothing was "
                                f"overwritten; move it away or pass another --out")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return path
