"""Swin-L and CvT-w24 backbones of Query2Label: checkpoint layout, output maps, buffers and maths.

Layouts are checked against the key lists of the authors' models (tests/fixtures/q2l_keys); the maths
against independent computations (timm's Swin, hand-written window masks, a functional CvT attention).
"""
import itertools

import pytest
import torch
import torch.nn.functional as F
from paths import FIXTURES

from harness.models.backbones.cvt import CvTBlock, CvTStage, build_cvt, build_cvt_w24
from harness.models.backbones.swin import build_swin, build_swin_l_384

KEYS_DIR = FIXTURES / "q2l_keys"


def reference_backbone_layout(model_id):
    """[(key, shape, dtype)] of the authors' backbone (`backbone.0.` in the Q2L model), prefix removed."""
    rows = []
    for line in (KEYS_DIR / f"{model_id}.tsv").read_text().splitlines():
        if line.startswith("backbone.0."):
            key, shape, dtype = line.split("\t")
            rows.append((key[len("backbone.0."):], shape, dtype))
    return rows


def layout(module):
    return [(k, "x".join(map(str, v.shape)) if v.dim() else "scalar", str(v.dtype).replace("torch.", ""))
            for k, v in module.state_dict().items()]


def randomize_(module, seed=0):
    """Random weights and BatchNorm statistics, so that every tensor of the checkpoint matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
            if t.is_floating_point() and not name.endswith(("attn_mask", "running_var")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return module.eval()


@pytest.mark.parametrize("model_id, build, channels, size", [
    ("q2l-swinl-384", build_swin_l_384, 1536, 12),
    ("q2l-cvtw24-384", build_cvt_w24, 1024, 24),
])
def test_released_backbone_layout_and_output(model_id, build, channels, size):
    # on the meta device: the full-size network's keys, dtypes and output size without computing
    # its weights; the values it computes are checked on small networks of the same classes below
    with torch.device("meta"):
        model = build(384).eval()
        out = model(torch.empty(1, 3, 384, 384))
    assert layout(model) == reference_backbone_layout(model_id)
    assert model.num_channels == channels
    assert out.shape == (1, channels, size, size)


def tiny_swin():
    # 64 px, patch 4, window 4: maps 16, 8, 4, 2 -> shifted windows in stages 0-1, one whole-map
    # window without shift in stage 2, and a window shrunk to the 2x2 map in stage 3
    return build_swin(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)


def test_swin_relative_position_index_and_mask_against_direct_computation():
    model = tiny_swin()
    blocks = [b for layer in model.layers for b in layer.blocks]
    for block in blocks:
        ws, shift = block.window_size, block.shift_size
        tokens = [(y, x) for y in range(ws) for x in range(ws)]
        expected_index = torch.tensor([[(y1 - y2 + ws - 1) * (2 * ws - 1) + (x1 - x2 + ws - 1)
                                        for (y2, x2) in tokens] for (y1, x1) in tokens])
        assert torch.equal(block.attn.relative_position_index, expected_index)
        if not shift:
            assert block.attn_mask is None
            continue
        # after rolling by -shift, the token at (i, j) of the map came from one of three bands per
        # axis: the unshifted part, the part next to the border, and the wrapped-around part
        H, W = block.resolution

        def band(i, n):
            return 0 if i < n - ws else (1 if i < n - shift else 2)

        expected = torch.zeros(H // ws * (W // ws), ws * ws, ws * ws)
        for w_idx, (wy, wx) in enumerate(itertools.product(range(H // ws), range(W // ws))):
            labels = [(band(wy * ws + y, H), band(wx * ws + x, W)) for (y, x) in tokens]
            for a, b in itertools.product(range(ws * ws), repeat=2):
                expected[w_idx, a, b] = 0.0 if labels[a] == labels[b] else -100.0
        assert torch.equal(block.attn_mask, expected)
    shifts = [(b.resolution[0], b.window_size, b.shift_size) for b in blocks]
    assert shifts == [(16, 4, 0), (16, 4, 2), (8, 4, 0), (8, 4, 2), (4, 4, 0), (4, 4, 0), (2, 2, 0), (2, 2, 0)]


def test_swin_matches_timm_after_timm_key_conversion():
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    ours = randomize_(tiny_swin())
    theirs = timm_swin.SwinTransformer(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                                       window_size=4, num_classes=0).eval()
    theirs.load_state_dict(timm_swin.checkpoint_filter_fn(ours.state_dict(), theirs), strict=True)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = theirs.forward_features(x).permute(0, 3, 1, 2)  # timm: NHWC
        got = ours(x)
    assert got.shape == (3, 128, 2, 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_swin_images_in_a_batch_are_independent_and_size_is_checked():
    model = randomize_(tiny_swin())
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="built for 64x64"):
        model(torch.randn(1, 3, 96, 96))


def tiny_cvt():
    return build_cvt(dims=(8, 16, 32), depths=(1, 1, 2), num_heads=(1, 2, 4))


@pytest.mark.parametrize("build", [tiny_swin, tiny_cvt])
def test_output_is_finite_and_ends_with_a_layer_norm_over_channels(build):
    model = build().eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    assert torch.isfinite(out).all()
    # LayerNorm weight 1, bias 0 at init: zero mean over channels at every position
    assert out.mean(dim=1).abs().max() < 1e-4


def test_cvt_layout_keeps_batchnorm_counters_and_one_cls_token():
    keys = tiny_cvt().state_dict().keys()
    assert [k for k in keys if "cls_token" in k] == ["stage2.cls_token"]
    assert "stage0.blocks.0.attn.conv_proj_k.bn.num_batches_tracked" in keys
    assert not any(k.startswith("head") for k in keys)


def functional_conv_attention(attn, x, h, w, cls):
    """CvT attention written out from the paper and the authors' config, with torch.nn.functional."""
    B, _, C = x.shape
    tokens = x[:, 1:] if cls else x
    grid = tokens.transpose(1, 2).reshape(B, C, h, w)

    def conv_bn(p):
        y = F.conv2d(grid, p.conv.weight, stride=p.conv.stride, padding=p.conv.padding, groups=C)
        y = F.batch_norm(y, p.bn.running_mean, p.bn.running_var, p.bn.weight, p.bn.bias, False, 0.0, p.bn.eps)
        y = y.flatten(2).transpose(1, 2)
        return torch.cat([x[:, :1], y], 1) if cls else y

    q = F.linear(conv_bn(attn.conv_proj_q), attn.proj_q.weight, attn.proj_q.bias)
    k = F.linear(conv_bn(attn.conv_proj_k), attn.proj_k.weight, attn.proj_k.bias)
    v = F.linear(conv_bn(attn.conv_proj_v), attn.proj_v.weight, attn.proj_v.bias)
    n, d = attn.num_heads, C // attn.num_heads
    out = []
    for head in range(n):
        sl = slice(head * d, (head + 1) * d)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / C ** 0.5  # full width, as the authors
        out.append(scores.softmax(-1) @ v[..., sl])
    return F.linear(torch.cat(out, -1), attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("cls", [False, True])
def test_cvt_block_against_functional_form(cls):
    block = randomize_(CvTBlock(dim=16, num_heads=4, with_cls_token=cls))
    h, w = 6, 5
    x = torch.randn(2, h * w + int(cls), 16, generator=torch.Generator().manual_seed(2))

    def layer_norm(t, norm):
        return F.layer_norm(t, (16,), norm.weight, norm.bias, 1e-5)

    y = x + functional_conv_attention(block.attn, layer_norm(x, block.norm1), h, w, cls)
    hidden = F.linear(layer_norm(y, block.norm2), block.mlp.fc1.weight, block.mlp.fc1.bias)
    hidden = hidden * torch.sigmoid(1.702 * hidden)  # QuickGELU, as the authors' CvT config
    expected = y + F.linear(hidden, block.mlp.fc2.weight, block.mlp.fc2.bias)
    with torch.inference_mode():
        got = block(x, h, w)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_cvt_stage_returns_the_spatial_tokens_without_the_cls_token():
    stage = randomize_(CvTStage(3, 8, depth=0, num_heads=1, patch_size=3, stride=2, padding=1, with_cls_token=True))
    x = torch.randn(2, 3, 12, 10)
    with torch.inference_mode():
        embedded = F.conv2d(x, stage.patch_embed.proj.weight, stage.patch_embed.proj.bias, stride=2, padding=1)
        norm = stage.patch_embed.norm
        expected = F.layer_norm(embedded.permute(0, 2, 3, 1), (8,), norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
        torch.testing.assert_close(stage(x), expected, rtol=1e-5, atol=1e-5)


def test_cvt_output_is_stride_16_and_uses_the_cls_token():
    model = randomize_(tiny_cvt())
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        out = model(x)
        assert out.shape == (2, 32, 6, 4)
        # the cls token is dropped from the output but attends with the spatial tokens
        model.stage2.cls_token.add_(1.0)
        assert not torch.allclose(model(x), out)
