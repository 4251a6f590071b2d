"""The docs cannot drift from the code: every link in README.md and docs/*.md names a real file,
every `harness ...` command they show names a real subcommand and real flags, and docs/cli.md lists
every subcommand and flag the parser has."""
import argparse
import re
import shlex

import pytest
from paths import REPO

from harness.cli import build_parser

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`(harness [^`]+)`")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def _subparsers(parser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _options(parser):
    return {o for a in parser._actions for o in a.option_strings}


def _commands(text):
    """Each `harness ...` invocation shown: in code spans, and in code blocks (also after `-m`)."""
    found = [m.group(1) for m in CODE_SPAN.finditer(text)]
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            at = line.find("harness ")
            if at >= 0 and (at == 0 or line[at - 1] in " /"):
                found.append(line[at:])
    return found


def _problem(command, parser):
    """Why `command` is not a real command line of the harness (None when it is)."""
    try:
        words = shlex.split(re.sub(r"\[[^\]]*\]", " ", command))[1:]  # [optional parts] are placeholders
    except ValueError:
        words = command.split()[1:]
    level = parser
    for word in words:
        word = word.split("=")[0]
        if word.startswith("-"):
            if word not in _options(level) | {"-h", "--help"}:
                return f"no flag {word}"
            continue
        sub = _subparsers(level)
        if sub is not None and level is parser or (sub is not None and word in sub.choices):
            if word not in sub.choices:
                return f"no subcommand {word}"
            level = sub.choices[word]
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_link_names_a_real_file(doc):
    missing = [target for target in LINK.findall(doc.read_text())
               if not target.startswith(("http://", "https://", "#", "mailto:"))
               and not (doc.parent / target.split("#")[0]).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_command_shown_is_a_real_one(doc):
    parser = build_parser()
    wrong = [(c, why) for c in _commands(doc.read_text()) if (why := _problem(c, parser))]
    assert not wrong, f"{doc.name}: {wrong}"


def test_the_cli_reference_lists_every_subcommand_and_flag():
    text = (REPO / "docs" / "cli.md").read_text()
    missing = []

    def walk(parser, prefix):
        sub = _subparsers(parser)
        if sub is not None:
            for name, child in sub.choices.items():
                if f"`{prefix} {name}`" not in text:
                    missing.append(f"{prefix} {name}")
                walk(child, f"{prefix} {name}")
        section = text.split(f"`{prefix}`", 1)[-1] if prefix != "harness" else text
        for option in _options(parser) - {"-h", "--help", "-q", "--quiet", "-v", "--verbose", "--no-progress"}:
            if f"`{option}`" not in section:
                missing.append(f"{prefix} {option}")

    walk(build_parser(), "harness")
    assert not missing, f"docs/cli.md does not list: {missing}"


def test_the_checker_catches_a_wrong_command():
    parser = build_parser()
    assert _problem("harness eval m --coco-root d --no-such-flag", parser) == "no flag --no-such-flag"
    assert _problem("harness evaluate m", parser) == "no subcommand evaluate"
    assert _problem("harness data smoke --out d --images 4", parser) is None
