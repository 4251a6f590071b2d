"""The model a training starts from: their frozen parts, their stochastic depth, their pretrained-file
loading (head dropped, every backbone weight required), for each backbone family (tiny sizes)."""
import pytest
import torch

from harness.errors import UserError
from harness.manifest import get_spec
from harness.models.backbones.drop_path import DropPath
from harness.q2l import backbones
from harness.q2l.loss import asymmetric_loss
from harness.q2l.recipe import load_recipe

MODELS = {"resnet101": "q2l-r101-448", "tresnetl": "q2l-tresl-448", "tresnetl_v2": "q2l-tresl22k-448",
          "swin_L_384_22k": "q2l-swinl-384", "CvT_w24": "q2l-cvtw24-384"}


def _tiny(backbone):
    torch.manual_seed(0)
    return backbones.build_model(load_recipe(get_spec(MODELS[backbone]), fetch_files=False), smoke=True)


@pytest.mark.parametrize("backbone", list(MODELS))
def test_frozen_parts_and_a_training_step(backbone):
    model = _tiny(backbone)
    frozen = backbones.freeze(model)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    if backbone in backbones.CNNS:  # their BackboneBase: everything outside layer2-4
        assert frozen and all(".layer1." in n or ".conv1." in n or n.endswith("conv1.weight") or ".bn1." in n
                              for n in frozen), frozen[:5]
        assert any(".layer2." in n for n in trained) and not any(".layer1." in n for n in trained)
    else:
        assert frozen == [] and any(n.startswith("backbone.0.") for n in trained)
    drops = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert (max(drops, default=0) > 0) == (backbone in ("swin_L_384_22k", "CvT_w24"))
    model.train()
    loss = asymmetric_loss(model(torch.randn(2, 3, 64, 64)), torch.zeros(2, 80, dtype=torch.float64))
    loss.backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters() if p.requires_grad)


def test_tresnet_statistics_still_update_in_frozen_layers():
    model = _tiny("tresnetl")
    backbones.freeze(model)
    abn = backbones.backbone_module(model).body.layer1[0].conv1[1]
    before = abn.running_mean.clone()
    model.train()(torch.randn(2, 3, 64, 64))
    assert not abn.weight.requires_grad and not torch.equal(before, abn.running_mean)


def test_pretrained_file_loads_as_their_backbone_py(tmp_path):
    model = _tiny("swin_L_384_22k")
    target = backbones.backbone_module(model)
    pretrained = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in target.state_dict().items()}
    file = tmp_path / "swin.pth"
    torch.save({"model": {**pretrained, "head.weight": torch.zeros(5, 128), "head.bias": torch.zeros(5)}}, file)
    info = backbones.load_pretrained(model, "swin_L_384_22k", file, "the Swin file")
    assert info["unused_count"] == 0 and info["loaded"] == len(pretrained)  # their 'head' keys dropped
    assert all(torch.equal(target.state_dict()[k], v) for k, v in pretrained.items())


def test_resnet_file_without_frozen_bn_counter_and_with_fc(tmp_path):
    model = _tiny("resnet101")
    state = {k: v.clone() for k, v in backbones.backbone_module(model).state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    file = tmp_path / "r101.pth"
    torch.save(state, file)
    assert backbones.load_pretrained(model, "resnet101", file, "x")["unused_count"] == 0


def test_a_file_of_another_backbone_is_refused(tmp_path):
    file = tmp_path / "cvt.pth"
    torch.save(backbones.backbone_module(_tiny("CvT_w24")).state_dict(), file)
    with pytest.raises(UserError, match="is not a pretrained swin_L_384_22k file"):
        backbones.load_pretrained(_tiny("swin_L_384_22k"), "swin_L_384_22k", file, "the Swin file")


@pytest.mark.parametrize("backbone", ["tresnetl", "tresnetl_v2"])
def test_zero_initialised_residual_abns_get_a_gradient_as_inplace_abn_gives(backbone, monkeypatch):
    """TResNet starts each residual branch's last ABN at weight 0; their InPlaceABN's backward gives such a
    weight the gradient sum(xhat * dy) (sign(0) = +1), so it trains. torch.abs' gradient there is 0."""
    monkeypatch.setenv("HARNESS_TRESNET_BN", "torch")
    model = _tiny(backbone)
    backbones.freeze(model)
    zero = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("1.weight") and p.dim() == 1
            and bool((p == 0).all())]
    assert zero  # layer2-4's residual ABNs
    model.train()
    loss = asymmetric_loss(model(torch.randn(4, 3, 64, 64)), (torch.rand(4, 80) < 0.3).double())
    loss.backward()
    assert all(bool((p.grad != 0).any()) for p in zero)
