"""Query2Label and ASL models: the authors' state-dict layouts, and the maths of their parts.

The layouts in tests/fixtures/q2l_keys/ were listed from the authors' own model code; a rebuilt
model must hold exactly those keys and shapes to load the released weights strictly.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from paths import FIXTURES

from harness.manifest import get_spec
from harness.models import build_from_arch, create_model
from harness.models.backbones.tresnet import ABN, BlurDownsample, SpaceToDepth
from harness.models.position import sine_table
from harness.models.q2l import GroupWiseLinear

KEYS = FIXTURES / "q2l_keys"
Q2L_MODELS = ["q2l-r101-448", "q2l-r101-576", "q2l-tresl-448", "q2l-tresl22k-448", "q2l-swinl-384", "q2l-cvtw24-384"]


def read_layout(model_id):
    layout = {}
    for line in (KEYS / f"{model_id}.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, _dtype = line.split("\t")
        layout[key] = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
    return layout


@pytest.mark.parametrize("model_id", Q2L_MODELS)
def test_state_dict_layout_equals_the_authors(model_id):
    with torch.device("meta"):  # keys and shapes only: no memory, no weight init
        model = create_model(model_id)
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    theirs = list(read_layout(model_id).items())
    assert [k for k, _ in ours if k not in dict(theirs)] == []
    assert [k for k, _ in theirs if k not in dict(ours)] == []
    assert ours == theirs  # same shapes, same order


def small_q2l(backbone, img_size=64, **kw):
    # one block a stage; TResNets at about an eighth of their width (288 and 256 channels); ResNet-101 keeps its
    # 2048 channels, projected to a 256-wide transformer by input_proj's 1x1 conv (at 2048 wide, as released, the
    # transformer's three attentions are 50 M weights drawn at random: the logits' shape and their dependence on
    # the image hold at any width; the TResNets keep the released identity input_proj)
    small = {"resnet101": {"hidden_dim": 256}, "tresnetl": {"hidden_dim": 288, "backbone_width": 0.15},
             "tresnetl_v2": {"hidden_dim": 256, "backbone_width": 0.125}}[backbone]
    arch = dict(name="q2l", backbone=backbone, dim_feedforward=32, enc_layers=1, dec_layers=2, nheads=4,
                num_classes=80, img_size=img_size, backbone_layers=[1, 1, 1, 1], **small)
    arch.update(kw)
    return build_from_arch(arch).eval()


@pytest.mark.parametrize("backbone", ["resnet101", "tresnetl", "tresnetl_v2"])
def test_forward_gives_one_logit_per_label_and_depends_on_the_image(backbone):
    torch.manual_seed(0)
    model = small_q2l(backbone)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 80) and torch.isfinite(out).all()
    assert not torch.allclose(out[0], out[1])  # the two images give different logits
    assert model.backbone[1].pe.shape == (1, model.transformer.d_model, 2, 2)


def test_input_at_another_resolution_is_refused():
    model = small_q2l("tresnetl_v2", img_size=64)
    with pytest.raises(ValueError, match="resolution"):
        model(torch.rand(1, 3, 96, 96))


def test_decoder_has_no_self_attention_and_encoder_no_final_norm():
    model = small_q2l("tresnetl_v2", dec_layers=3)
    layer = model.transformer.decoder.layers[0]
    assert not hasattr(layer, "self_attn") and not hasattr(layer, "norm1")
    assert len(model.transformer.decoder.layers) == 3
    assert not hasattr(model.transformer.encoder, "norm")


def test_sine_table_matches_the_formula():
    h, w, f = 3, 5, 8
    pe = sine_table(h, w, f)
    assert pe.shape == (1, 2 * f, h, w)
    for i in range(h):
        for j in range(w):
            y = (i + 1) / (h + 1e-6) * 2 * math.pi
            x = (j + 1) / (w + 1e-6) * 2 * math.pi
            for d in range(f):
                fn = math.sin if d % 2 == 0 else math.cos
                freq = 10000 ** (2 * (d // 2) / f)
                assert pe[0, d, i, j].item() == pytest.approx(fn(y / freq), abs=1e-5)
                assert pe[0, f + d, i, j].item() == pytest.approx(fn(x / freq), abs=1e-5)


def test_group_wise_linear_is_one_classifier_per_label():
    fc = GroupWiseLinear(5, 7)
    x = torch.randn(3, 5, 7)
    expected = torch.stack([x[:, k] @ fc.W[0, k] + fc.b[0, k] for k in range(5)], dim=1)
    torch.testing.assert_close(fc(x), expected)


@pytest.mark.parametrize("activation,slope", [("leaky_relu", 1e-2), ("leaky_relu", 1e-3), ("identity", 0.0)])
def test_abn_is_batchnorm_with_abs_weight_plus_eps_then_activation(activation, slope):
    torch.manual_seed(0)
    abn = ABN(6, activation, slope).eval()
    with torch.no_grad():
        abn.weight.copy_(torch.tensor([-2.0, -0.5, 0.0, 0.5, 1.0, 3.0]))
        abn.bias.normal_()
        abn.running_mean.normal_()
        abn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 4, 4)
    c = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
    y = (x - c(abn.running_mean)) / torch.sqrt(c(abn.running_var) + 1e-5) * (c(abn.weight).abs() + 1e-5) + c(abn.bias)
    if activation == "leaky_relu":
        y = torch.where(y >= 0, y, y * slope)
    torch.testing.assert_close(abn(x), y)


def test_tresnet_activation_slopes_are_the_authors():
    with torch.device("meta"):  # the slopes are attributes, not weights
        body = create_model("asl-tresnetl-448").body
    assert body.conv1[1].slope == 1e-2 and body.conv1[1].activation == "leaky_relu"  # stem
    block = body.layer3[0]
    assert block.conv1[1].slope == 1e-3 and block.conv2[0][1].slope == 1e-3
    assert block.conv3[1].activation == "identity" and block.downsample[1][1].activation == "identity"


def test_space_to_depth_puts_each_4x4_cell_into_channels_row_major():
    x = torch.randn(1, 3, 8, 12)
    y = SpaceToDepth()(x)
    assert y.shape == (1, 48, 2, 3)
    for dy in range(4):
        for dx in range(4):
            for c in range(3):
                torch.testing.assert_close(y[0, (dy * 4 + dx) * 3 + c], x[0, c, dy::4, dx::4])


def test_blur_downsample_is_a_reflect_padded_binomial_filter():
    x = torch.randn(1, 2, 6, 6)
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = torch.stack([
        torch.stack([(padded[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * k).sum() for j in range(3)])
        for c in range(2) for i in range(3)]).view(1, 2, 3, 3)
    torch.testing.assert_close(BlurDownsample(2)(x), expected)
    assert "filt" not in BlurDownsample(2).state_dict()  # a constant, not a checkpoint key


def test_asl_model_has_the_asl_checkpoint_layout():
    with torch.device("meta"):  # keys, shapes and the output's shape: no weight drawn, no pixel computed
        model = create_model("asl-tresnetl-448").eval()
    keys = model.state_dict()
    q2l = read_layout("q2l-tresl-448")
    body = {k[len("backbone.0.body."):]: v for k, v in q2l.items() if k.startswith("backbone.0.body.")}
    assert {k: tuple(v.shape) for k, v in keys.items() if k.startswith("body.")} == body
    assert keys["head.fc.weight"].shape == (80, 2432) and keys["head.fc.bias"].shape == (80,)
    assert set(keys) == set(body) | {"head.fc.weight", "head.fc.bias"}
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64, device="meta")).shape == (1, 80)


def test_manifest_arch_reaches_the_builder():
    spec = get_spec("q2l-r101-576")
    with torch.device("meta"):  # sizes only
        model = create_model("q2l-r101-576")
    assert model.arch["img_size"] == spec.arch["img_size"] == 576
    assert model.backbone[1].pe.shape[-2:] == (18, 18)
    assert model.transformer.encoder.layers[0].linear1.out_features == spec.arch["dim_feedforward"]
