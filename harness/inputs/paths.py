"""The paths a user names on the command line, checked before any work: one line saying what the path
really is (missing, a folder, a FIFO or device, a symlink loop, unreadable) and what to pass instead.
A FIFO is never opened: opening it blocks until a writer comes."""
import errno
import os
import stat
from pathlib import Path

from harness.errors import UserError

KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def what_it_is(path):
    """None for a regular file; else what `path` is, in words (e.g. "a folder", "a FIFO (named pipe)")."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing" if not os.path.lexists(path) else "a symlink to nothing"
    except OSError as e:  # a symlink loop, a part of the path that is a file, a name too long
        return "a loop of symbolic links" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((words for test, words in KINDS if test(mode)), "not a regular file")


def check_input_file(path, flag, wanted):
    """`path` (given with `flag`) is a readable regular file, or one line: what it is, and `wanted`."""
    kind = what_it_is(path)
    if kind == "missing":
        raise UserError(f"{flag} {path}: no such file; {wanted}")
    if kind is not None:
        raise UserError(f"{flag} {path} is {kind}, not a file; {wanted}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{flag} {path}: permission denied; {wanted}")


def check_new_file(path, flag):
    """`path` (given with `flag`) can be written as a new file: it does not exist and its folder does
    and is writable. Results are never overwritten."""
    path = Path(path)
    if os.path.lexists(path):
        raise UserError(f"{flag} {path} exists; results are never overwritten: pass another file name")
    folder = path.parent
    kind = what_it_is(folder)
    if kind == "missing":
        raise UserError(f"{flag} {path}: its folder {folder} does not exist; create it or pass another path")
    if kind != "a folder":
        raise UserError(f"{flag} {path}: {folder} is {kind or 'a file'}, not a folder; pass another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {folder} is not writable; pass a path you can write to")


def check_output_folder(path, flag):
    """`path` (given with `flag`) is a folder or can be made one: not a file, no part of it a file."""
    kind = what_it_is(path)
    if kind not in ("a folder", "missing"):
        raise UserError(f"{flag} {path} is {kind or 'a file'}, not a folder; pass a folder to write into")
    parent = Path(path).parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if what_it_is(parent) != "a folder":
        raise UserError(f"{flag} {path}: {parent} is {what_it_is(parent) or 'a file'}, not a folder; pass another path")
