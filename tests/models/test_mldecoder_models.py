"""The ASL zoo TResNets (M, XL) and ML-Decoder (TResNet-M/L/XL): the authors' key layouts, and the
same logits as the authors' model code on the same weights.

tests/fixtures/mldecoder/ was written by tests/fixtures/make_mldecoder_fixture.py from the authors'
code (Alibaba-MIIL/ASL, Alibaba-MIIL/ML_Decoder): full-size key layouts, and the logits of reduced
models (their classes, fewer blocks and channels) on tests/seeded_weights.py weights, unfused and
after their validate.py's batch-norm fusion, in fp32 and fp16.
"""
import gzip
import json

import pytest
import torch
from paths import FIXTURES
from seeded_weights import fill_seeded

from harness.manifest import get_spec
from harness.models import build_from_arch
from harness.models.backbones.tresnet import ABN, fuse_bn

DATA = FIXTURES / "mldecoder"
TINY = json.loads((DATA / "tiny.json").read_text())
NEW_MODELS = ["asl-tresnetm-224", "asl-tresnetxl-640", "mldecoder-tresnetm-224", "mldecoder-tresnetl-448",
              "mldecoder-tresnetxl-640"]


def layout(pairs):
    """(key, shape) in order, without the ABN counters some inplace_abn versions save and some not."""
    return [(k, tuple(s)) for k, s in pairs if not k.endswith("num_batches_tracked")]


def tiny_model(name):
    arch = dict(TINY["models"][name]["arch"], layers=tuple(TINY["models"][name]["arch"]["layers"]))
    return fill_seeded(build_from_arch(arch)).eval()


def tiny_input():
    spec = TINY["meta"]["input"]
    return torch.rand(*spec["shape"], generator=torch.Generator().manual_seed(spec["seed"]))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixture was made: one order of the reductions
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("model_id", NEW_MODELS)
def test_full_size_layout_equals_the_authors(model_id):
    with gzip.open(DATA / "layouts.json.gz", "rt") as f:
        theirs = layout(json.load(f)["models"][model_id])
    with torch.device("meta"):  # the full-size model without allocating its weights
        model = build_from_arch(get_spec(model_id).arch)
    assert layout((k, v.shape) for k, v in model.state_dict().items()) == theirs


@pytest.mark.parametrize("name", sorted(TINY["models"]))
def test_logits_equal_the_authors_code(name):
    model, expected = tiny_model(name), TINY["models"][name]
    assert layout((k, v.shape) for k, v in model.state_dict().items()) == layout(expected["keys"])
    with torch.no_grad():
        out = model(tiny_input())
    torch.testing.assert_close(out, torch.tensor(expected["logits_fp32"]), rtol=1e-5, atol=1e-6)
    assert out.std() > 0.1  # the weights reach the logits: not a constant output


@pytest.mark.parametrize("name", [n for n in sorted(TINY["models"]) if n.startswith("mldecoder")])
def test_fused_batch_norm_equals_the_authors_fusion_and_the_unfused_model(name):
    model, expected = tiny_model(name), TINY["models"][name]
    x = tiny_input()
    with torch.no_grad():
        unfused = model(x)
        fused = fuse_bn(model)
        assert not any(isinstance(m, ABN) for m in fused.modules())
        out = fused(x)
        torch.testing.assert_close(out, torch.tensor(expected["logits_fused_fp32"]), rtol=1e-5, atol=1e-6)
        assert (out - unfused).abs().max() <= 1e-5
        # their validate.py: the fused model in fp16 (`.half()`, inputs too); CPU fp16 kernels may
        # round differently from one CPU to another, so a few fp16 steps are allowed here
        half = fused.half()(x.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), torch.tensor(expected["logits_fused_fp16"]), rtol=1e-2, atol=1e-2)


def test_unknown_ml_decoder_backbone_is_refused():
    with pytest.raises(ValueError, match="tresnet_m"):
        build_from_arch({"name": "ml_decoder", "model_name": "resnet50", "num_classes": 80, "img_size": 224})
