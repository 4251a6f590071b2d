"""The model registry imports only the module of the architecture asked for."""
import json
import os
import subprocess
import sys

from conftest import SMALL_Q2L
from paths import REPO

from harness import models


def test_every_builder_is_named_with_its_module():
    known = models.registered_architectures()
    ours = {name: fn.__module__ for name, fn in models._BUILDERS.items() if fn.__module__.startswith("harness.")}
    assert ours == models.BUILDER_MODULES and set(models.BUILDER_MODULES) <= set(known)


def test_a_model_without_torchvision_parts_is_built_without_importing_it():
    """torchvision's import costs each process about a second; a TResNet-based Q2L needs none of it."""
    code = ("import json, os, sys; from harness.models import build_from_arch; build_from_arch(json.loads(sys.argv[1])); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'harness'))), flush=True); "
            "os._exit(0)")  # the answer is out: tearing torch's modules down would cost another half second
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(SMALL_Q2L)], env=env, capture_output=True, text=True,
                          check=True)
    loaded = json.loads(done.stdout)
    assert "harness.models.q2l" in loaded and "harness.models.backbones.tresnet" in loaded
    assert not [m for m in loaded if m.startswith("torchvision")]
    assert not {"harness.models.mlspl", "harness.models.ctran", "harness.models.asl"} & set(loaded)
