"""The YAML writer (harness.inputs.yaml_files.dump_yaml): libyaml's emitter where it writes the very text
PyYAML's pure-Python emitter writes, that emitter everywhere else."""
import random

import pytest
import yaml

from harness.inputs.yaml_files import _libyaml_writes_the_same, _PlainDumper, dump_yaml, read_yaml
from harness.manifest import DEFAULT_MANIFEST


def _python_text(data, **options):
    return yaml.dump(data, Dumper=_PlainDumper, **options)


@pytest.mark.parametrize("options", [{}, {"sort_keys": True}])
def test_the_manifest_is_written_as_pythons_emitter_writes_it(options):
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    assert _libyaml_writes_the_same(data) is hasattr(yaml, "CSafeDumper")  # the fast path is the one compared
    assert dump_yaml(data, **options) == _python_text(data, **options)


def test_long_values_fold_at_the_same_columns():
    rng = random.Random(0)
    words = ["word", "http://example.org/a?b=1&c=2", "#", ":", "-", "'", '"', "x" * 40, "{", "]", ",", "!", "*", "yes"]
    for _ in range(200):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 40)))
        data = {"k" * rng.randint(1, 100): {"list": [text, {"deeper": text}], "value": text}, "n": 1.5, "none": None}
        assert _libyaml_writes_the_same(data)
        assert dump_yaml(data) == _python_text(data)


@pytest.mark.parametrize("data", [
    "a top-level scalar", ["a", "list"], {"": "an empty key"}, {"k" * 123: "a long key"}, {"tab": "a\tb"},
    {"line": "two\nlines"}, {"non-ascii": "caf\u00e9 " * 30}, {"shared": [[1]] * 2}, {1: "a number key"},
])
def test_what_libyaml_writes_otherwise_goes_to_pythons_emitter(data):
    assert not _libyaml_writes_the_same(data)
    assert dump_yaml(data) == _python_text(data)
