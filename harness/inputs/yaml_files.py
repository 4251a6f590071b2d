"""The one YAML reader of the harness (the manifest, the lock file): strict, and one line per fault.

Refused, each naming the file and the line: anchors and aliases (an alias bomb of a few lines
expands to gigabytes wherever its value is printed or written), duplicate keys (YAML keeps the last
one silently, hiding an edit), nesting deeper than any harness file needs; and, before a byte is
parsed, a path that is not a regular file (a FIFO never ends, /dev/zero never stops), a file past
MAX_BYTES, and text that is not UTF-8.
"""
import copy
import functools
import marshal
import os
import re
import stat
from pathlib import Path

import yaml

from harness.errors import UserError

# libyaml's parser where PyYAML has it (about 8x faster; the same safe constructors build the objects)
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 16 * 2**20  # the manifest is about 60 KB; a lock file a few KB
MAX_DEPTH = 32  # levels of nested mappings and lists; the manifest uses 6


class _Refused(yaml.MarkedYAMLError):
    """A construct this reader refuses, at its place in the text."""


class _StrictLoader(_BASE_LOADER):
    """PyYAML's safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                    seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # an unhashable key: the base class names it
                    continue
                if first is not None:
                    raise _Refused(problem=f"the key {key!r:.60} is given twice (first on line {first}); "
                                           f"keep one", problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep)


def _check_events(text):
    """Refuse anchors, aliases and deep nesting, reading the event stream only (no value is built)."""
    depth = 0
    for event in yaml.parse(text, Loader=_BASE_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(problem="YAML anchors and aliases (&name, *name) are not accepted here; "
                                   "write each value out", problem_mark=event.start_mark)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


@functools.lru_cache(maxsize=16)
def _parse(text):
    """(the data of `text` as marshal bytes, None), or (None, the data) where it holds a date, which marshal
    cannot write. Each reader loads its own copy from the bytes: 5x faster than a deepcopy, and as exact
    for mappings (in order), lists, strings, numbers, booleans, None, bytes and sets."""
    _check_events(text)
    data = yaml.load(text, Loader=_StrictLoader)
    try:
        return marshal.dumps(data), None
    except ValueError:
        return None, data


def read_yaml(text, source="<text>", fix="fix the file"):
    """The data of YAML `text` (each caller gets its own copy; the same text is parsed once, as a run
    reads its manifest many times); a UserError naming `source`, the line and `fix` for bad YAML."""
    try:
        frozen, data = _parse(text)
        return marshal.loads(frozen) if frozen is not None else copy.deepcopy(data)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}" if mark else ""
        problem = e.problem or e.context or "not valid YAML"
        kind = "" if isinstance(e, _Refused) else "not valid YAML: "
        raise UserError(f"{source}{where}: {kind}{problem}; {fix}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:  # ValueError: a date like 2024-13-45
        raise UserError(f"{source}: not valid YAML ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"{fix}") from None


def read_text_file(path, what, fix):
    """The UTF-8 text of the regular file `path` (at most MAX_BYTES), or a UserError naming `what`
    it was meant to be and `fix`. Checked before opening: opening a FIFO waits for a writer."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; {fix}") from None
    except OSError as e:
        raise UserError(f"{what} {path}: cannot be read ({e.strerror or e}); {fix}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{what} {path} is a folder, not a file; {fix}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{what} {path} is not a regular file (a device, FIFO or socket); {fix}")
    if info.st_size > MAX_BYTES:
        raise UserError(f"{what} {path} is {info.st_size:,} bytes, more than a {what} can be "
                        f"({MAX_BYTES // 2**20} MiB); {fix}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot be read ({e.strerror or e}); {fix}") from None
    if len(data) > MAX_BYTES:  # it grew since the check
        raise UserError(f"{what} {path} is more than {MAX_BYTES // 2**20} MiB; {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}); {fix}") from None


def read_yaml_file(path, what, fix):
    """The data of the YAML file `path`, every fault one UserError line (see the module's doc)."""
    return read_yaml(read_text_file(path, what, fix), source=path, fix=fix)


class _PlainDumper(yaml.SafeDumper):
    """Writes a value used twice out twice: what this module writes, it reads back (no aliases)."""

    def ignore_aliases(self, data):
        return True


if hasattr(yaml, "CSafeDumper"):
    class _PlainCDumper(yaml.CSafeDumper):
        """_PlainDumper with libyaml's emitter (about 5x faster; the same representer builds the nodes)."""

        def ignore_aliases(self, data):
            return True
else:  # PyYAML built without libyaml
    _PlainCDumper = None

_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _libyaml_writes_the_same(data):
    """Whether libyaml's emitter writes the mapping `data` character for character as PyYAML's does.
    They differ only where this says no: a top-level scalar (libyaml ends it with "..."), a string
    with a line break, tab or non-ASCII character (double-quoted, folded at other columns), an empty
    key or a long one (PyYAML writes one past 122 characters as an explicit "? key", libyaml one past
    128; keys up to 100 go to libyaml), and
    types other than plain mappings, lists, strings, numbers, booleans and None (not checked).
    A mapping or list met twice is left to PyYAML too (so the walk ends on one inside itself)."""
    if type(data) is not dict:
        return False
    todo, seen = [data], set()
    while todo:
        value = todo.pop()
        kind = type(value)
        if kind in (dict, list):
            if id(value) in seen:  # a value used twice, or one inside itself: left to PyYAML
                return False
            seen.add(id(value))
        if kind is dict:
            for key in value:
                if type(key) is not str or not 0 < len(key) <= 100:
                    return False
            todo.extend(value)
            todo.extend(value.values())
        elif kind is list:
            todo.extend(value)
        elif kind is str:
            if not _PRINTABLE_ASCII.fullmatch(value):
                return False
        elif kind not in (int, float, bool, type(None)):
            return False
    return True


def dump_yaml(data, **options):
    """YAML text of `data` that read_yaml accepts (yaml.safe_dump writes a shared object as an alias).
    libyaml writes it where it gives the very text PyYAML's emitter gives (tests/download/test_yaml_writer.py)."""
    fast = _PlainCDumper is not None and set(options) <= {"sort_keys"} and _libyaml_writes_the_same(data)
    return yaml.dump(data, Dumper=_PlainCDumper if fast else _PlainDumper, **options)
