"""Tiny Query2Label models of each backbone family and a seeded AdamW loop, for the memory tests.

The loop is shaped like the authors' train(): forward, a loss summed over labels and averaged over
the batch (float64 targets, as theirs), backward, AdamW, OneCycleLR (which rewrites beta1 every step).
"""
import torch
import torch.nn.functional as F

from harness.models import build_from_arch
from harness.models.backbones.cvt import build_cvt
from harness.models.backbones.swin import build_swin
from harness.models.q2l import Query2Label
from harness.models.transformer import Transformer

NUM_CLASSES = 10
IMG = 64


def drop_path(x, p, training):
    """Stochastic depth as timm's DropPath: one draw per sample, survivors scaled by 1/(1-p)."""
    if not training or p == 0:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


def tiny_swin_q2l(drop=0.2, dropout=0.1):
    """Swin blocks with DropPath on both residual branches (the harness's Swin is inference-only,
    so it is added by hooks here, which run inside the block as a DropPath module would) and the
    transformer's dropout."""
    torch.manual_seed(0)
    swin = build_swin(img_size=IMG, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)
    for stage in swin.layers:
        for block in stage.blocks:
            for branch in (block.attn, block.mlp):
                branch.register_forward_hook(lambda m, args, out: drop_path(out, drop, m.training))
    return Query2Label(swin, Transformer(32, 4, 1, 2, 64, dropout=dropout), NUM_CLASSES, IMG, 32)


def tiny_cvt_q2l():
    """CvT blocks: BatchNorm in the q/k/v projections, a cls token in the last stage."""
    torch.manual_seed(0)
    cvt = build_cvt(dims=(8, 16, 32), depths=(1, 1, 2), num_heads=(1, 2, 4))
    return Query2Label(cvt, Transformer(32, 4, 1, 2, 64, dropout=0.1), NUM_CLASSES, IMG, 16)


def tiny_cnn_q2l(backbone="resnet101", dropout=0.1):
    """ResNet-101 (FrozenBatchNorm) or TResNet (ABN) with one block a stage; conv1 and layer1 frozen
    as the authors' Q2L trains them."""
    torch.manual_seed(0)
    size = {"resnet101": {}, "tresnetl": {"backbone_width": 0.15}}[backbone]
    model = build_from_arch(dict(name="q2l", backbone=backbone, hidden_dim=32, dim_feedforward=64, enc_layers=1,
                                 dec_layers=2, nheads=4, num_classes=NUM_CLASSES, img_size=IMG,
                                 backbone_layers=[1, 1, 1, 1], dropout=dropout, **size))
    for name, p in model.backbone[0].body.named_parameters():
        if name.startswith(("conv1", "layer1", "bn1")):
            p.requires_grad_(False)
    return model


TINY_MODELS = {"swin": tiny_swin_q2l, "cvt": tiny_cvt_q2l, "r101": tiny_cnn_q2l,
               "tresnet": lambda: tiny_cnn_q2l("tresnetl")}


def batch(step, batch_size=4):
    g = torch.Generator().manual_seed(1000 + step)
    images = torch.rand(batch_size, 3, IMG, IMG, generator=g)
    targets = torch.randint(0, 2, (batch_size, NUM_CLASSES), generator=g).double()
    return images, targets


def mean_over_images_loss(logits, targets):
    """Summed over labels, averaged over the batch, in float64 (as the authors' loss is used)."""
    x = logits.double()
    return -(targets * F.logsigmoid(x) + (1 - targets) * F.logsigmoid(-x)).sum() / x.shape[0]


def make_optimizer(model, steps, batch_size=4, foreach=None):
    """AdamW over every trainable parameter, its lr overwritten by OneCycleLR, as the authors'."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3 * batch_size / 256, weight_decay=1e-2, foreach=foreach)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.2)
    return optimizer, scheduler


def snapshot(model, optimizer=None):
    """Every tensor of the state: weights, buffers and, if given, the optimizer's moments."""
    out = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for i, p in enumerate(optimizer.param_groups[0]["params"]):
            for k, v in optimizer.state[p].items():
                out[f"opt.{i}.{k}"] = v.detach().clone().cpu()
    return out


def differing(a, b):
    """Names of the tensors that are not bit-identical."""
    assert a.keys() == b.keys()
    return [k for k in a if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape
            or not torch.equal(bits(a[k]), bits(b[k]))]


def bits(t):
    return t.reshape(-1).contiguous().view(torch.uint8)


def train_steps(model, steps, device="cpu", offload=False, ema_device=None, micro_batch=None, seed=0,
                batch_size=4, foreach=None):
    """Seeded steps shaped like the authors' train(): zero_grad, forward + loss + backward (through
    `accumulate`), AdamW step, OneCycleLR step, EMA update (the authors' ModelEma arithmetic, on
    `ema_device` or beside the model). Returns (model, optimizer, EMA state)."""
    from harness.q2l.micro_batches import accumulate
    from harness.q2l.offload import OptimizerStateOffload

    model.to(device).train()
    optimizer, scheduler = make_optimizer(model, steps, batch_size, foreach)
    if offload:
        OptimizerStateOffload(optimizer)
    ema = {k: v.detach().to(ema_device or device, copy=True) for k, v in model.state_dict().items()}
    torch.manual_seed(seed)
    for step in range(steps):
        images, targets = batch(step, batch_size)
        optimizer.zero_grad()
        accumulate(model, images.to(device), targets.to(device), mean_over_images_loss, micro_batch)
        optimizer.step()
        scheduler.step()
        ema_update(ema, model)
    return model, optimizer, ema


def ema_update(ema, model, decay=0.9997):
    """The authors' ModelEma.update: every state-dict tensor read to the EMA's device, then
    decay * e + (1 - decay) * m."""
    with torch.no_grad():
        for e, m in zip(ema.values(), model.state_dict().values()):
            e.copy_(decay * e + (1.0 - decay) * m.to(e.device))
