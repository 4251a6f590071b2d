"""The model registry imports only the module of the architecture asked for."""
import after_torch
from conftest import SMALL_Q2L

from harness import models


def test_every_builder_is_named_with_its_module():
    known = models.registered_architectures()
    ours = {name: fn.__module__ for name, fn in models._BUILDERS.items() if fn.__module__.startswith("harness.")}
    assert ours == models.BUILDER_MODULES and set(models.BUILDER_MODULES) <= set(known)


# In a fresh interpreter (one answers every such check of the run: tests/helpers/after_torch.py)
BUILT_WITHOUT_TORCHVISION = after_torch.register("registry: a Q2L built without torchvision", f"""
import sys
from harness.models import build_from_arch
build_from_arch({SMALL_Q2L!r})
answer = sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'harness'))
""")


def test_a_model_without_torchvision_parts_is_built_without_importing_it():
    """torchvision's import costs each process about a second; a TResNet-based Q2L needs none of it."""
    loaded = after_torch.answer(BUILT_WITHOUT_TORCHVISION)
    assert "harness.models.q2l" in loaded and "harness.models.backbones.tresnet" in loaded
    assert not [m for m in loaded if m.startswith("torchvision")]
    assert not {"harness.models.mlspl", "harness.models.ctran", "harness.models.asl"} & set(loaded)
