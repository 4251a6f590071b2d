"""The one YAML reader (harness.inputs.yaml_files): aliases, duplicate keys and files that are not files are
one line naming the file and the line, and never hang."""
import os
import time

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.inputs.yaml_files import MAX_BYTES, dump_yaml, read_yaml, read_yaml_file
from harness.manifest import DEFAULT_MANIFEST, load_manifest

BOMB = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n" for i in range(8))


def _manifest_with(tmp_path, old, new):
    path = tmp_path / "m.yaml"
    text = DEFAULT_MANIFEST.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, indent, key", [
    ("    description: Query2Label, ResNet-101 (ImageNet-1k), 448 x 448\n", "    ", "description"),  # printed
    ("      csv: q2l_coco_448.csv\n", "      ", "csv"),  # in `paper`: a record would write it out
])
def test_an_alias_bomb_in_the_manifest_is_refused_at_once_naming_the_line(tmp_path, old, indent, key, capsys):
    bomb = "".join(f"{indent}{line}\n" for line in BOMB.splitlines()) + f"{indent}{key}: *i\n"
    path = _manifest_with(tmp_path, old, bomb)
    started = time.monotonic()
    assert main(["models", "--manifest", str(path)]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 5 and len(err.splitlines()) == 1 and len(err) < 600
    assert f"{path}, line " in err and "anchors and aliases" in err


def test_a_duplicate_key_is_refused_naming_both_lines(tmp_path):
    path = _manifest_with(tmp_path, "      resolution: 448\n", "      resolution: 448\n      resolution: 576\n")
    with pytest.raises(UserError, match=r"m\.yaml, line \d+: the key 'resolution' is given twice \(first on line \d+\)"):
        load_manifest(path)
    with pytest.raises(UserError, match="given twice"):
        read_yaml("{a: 1, a: 2}")


def test_a_fifo_a_device_a_folder_a_huge_and_a_binary_file_are_one_line_each(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"models:\n  \xff\xfe: 1\n")
    cases = {fifo: "not a regular file", "/dev/zero": "not a regular file", tmp_path: "is a folder",
             huge: "more than a manifest can be", binary: "not UTF-8", tmp_path / "none.yaml": "not found"}
    for path, says in cases.items():
        with pytest.raises(UserError, match=says) as err:
            load_manifest(path)
        assert "\n" not in str(err.value) and "--manifest" in str(err.value)


def test_deep_nesting_and_bad_dates_are_one_line():
    with pytest.raises(UserError, match="nested more than"):
        read_yaml("a: " + "[" * 200 + "]" * 200)
    with pytest.raises(UserError, match="not valid YAML"):
        read_yaml("a: 2024-13-45\n")


def test_what_the_harness_writes_it_reads_back(tmp_path):
    shared = {"sha256": "a" * 64}
    path = tmp_path / "x.yaml"
    path.write_text(dump_yaml({"m": {"checkpoint": shared, "config": shared}}))
    assert read_yaml_file(path, "lock file", "fix it") == {"m": {"checkpoint": shared, "config": shared}}
