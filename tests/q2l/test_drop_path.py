"""Stochastic depth as the authors' timm 0.4 drew it, in the Swin and CvT backbones."""
import torch

from harness.models.backbones.cvt import build_cvt
from harness.models.backbones.drop_path import DropPath, linear_rates
from harness.models.backbones.swin import build_swin


def test_drop_path_draws_floor_of_keep_plus_uniform():
    x = torch.randn(16, 3, 5)
    layer = DropPath(0.3).train()
    torch.manual_seed(7)
    out = layer(x)
    torch.manual_seed(7)
    keep = (0.7 + torch.rand(16, 1, 1)).floor()  # timm 0.4's draw: one uniform per sample
    assert torch.equal(out, x.div(0.7) * keep)
    assert 0 < int(keep.sum()) < 16


def test_drop_path_is_identity_in_eval_and_at_zero_without_a_draw():
    x = torch.randn(4, 3)
    state = torch.get_rng_state()
    assert DropPath(0.5).eval()(x) is x and DropPath(0.0).train()(x) is x
    assert torch.equal(torch.get_rng_state(), state)


def test_rates_follow_their_linspace_rule():
    assert linear_rates(0.1, 3) == [0.0, torch.tensor(0.05).item(), torch.tensor(0.1).item()]
    swin = build_swin(img_size=64, embed_dim=8, depths=(1, 2), num_heads=(1, 1), window_size=4, drop_path_rate=0.2)
    rates = [b.drop_path.drop_prob for stage in swin.layers for b in stage.blocks]
    assert rates == linear_rates(0.2, 3)
    cvt = build_cvt(dims=(8, 16), depths=(1, 3), num_heads=(1, 2), cls_token=(False, True),
                    drop_path_rates=(0.0, 0.3))
    assert [b.drop_path.drop_prob for b in cvt.stage1.blocks] == linear_rates(0.3, 3)
    assert cvt.stage0.blocks[0].drop_path.drop_prob == 0.0
