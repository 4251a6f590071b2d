"""AdamW's state offloaded to the host between steps gives the same bits as kept on the device.

On the CPU the "device" and the host are one: these tests check the plumbing (the state is copied
out for each step and written back after it, the step reads OneCycleLR's per-step lr and beta1,
a resume's loaded state is moved home), not a transfer. The CUDA test at the end checks the
transfer and the EMA's CPU arithmetic against the GPU's when a GPU is present.
"""
import copy

import pytest
import torch
from memory_helpers import TINY_MODELS, batch, differing, mean_over_images_loss, snapshot, train_steps

from harness.q2l.offload import OptimizerStateOffload

STEPS = 3


@pytest.mark.parametrize("foreach", [None, True])
@pytest.mark.parametrize("family", ["swin", "cvt"])
def test_offloaded_optimizer_state_gives_the_same_bits(family, foreach):
    model, optimizer, _ = train_steps(TINY_MODELS[family](), STEPS, foreach=foreach)
    model_o, optimizer_o, _ = train_steps(TINY_MODELS[family](), STEPS, offload=True, foreach=foreach)
    expected, got = snapshot(model, optimizer), snapshot(model_o, optimizer_o)
    assert any(k.endswith("exp_avg_sq") for k in got)
    assert differing(expected, got) == []


def test_state_is_the_host_copy_between_steps_and_a_fresh_copy_during_the_step():
    model = TINY_MODELS["swin"]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    offload = OptimizerStateOffload(optimizer)
    seen = []
    optimizer.register_step_pre_hook(  # registered after the offload's: sees what the step reads
        lambda opt, args, kwargs: seen.append({id(v) for s in opt.state.values() for v in s.values()}))
    betas = []
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=4)
    for step in range(3):
        images, targets = batch(step)
        optimizer.zero_grad()
        mean_over_images_loss(model(images), targets).backward()
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        scheduler.step()
        host = {id(v) for v in offload._host_copies.values()}
        assert {id(v) for s in optimizer.state.values() for v in s.values()} == host
    assert seen[0] == set()  # the first step creates the state
    assert seen[1] and seen[1].isdisjoint(host) and seen[2].isdisjoint(host)
    assert len(set(betas)) == 3  # OneCycleLR moved beta1 at every step
    params = list(model.parameters())  # two fp32 moments and a 0-dim fp32 step count per parameter
    assert offload.host_bytes() == 2 * sum(p.numel() * 4 for p in params) + 4 * len(params)


def test_a_resumed_optimizer_goes_home_and_continues_identically():
    """Train 2 steps, save, load into a fresh optimizer with offload, train 2 more: equals 4 steps."""
    def fresh(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-2)
        return opt, OptimizerStateOffload(opt)

    def steps(model, opt, which):
        torch.manual_seed(which[0])
        for step in which:
            images, targets = batch(step)
            opt.zero_grad()
            mean_over_images_loss(model(images), targets).backward()
            opt.step()

    model = TINY_MODELS["cvt"]().train()
    opt, _ = fresh(model)
    steps(model, opt, [0, 1])
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # it refers to the live state, as without offload
    steps(model, opt, [2, 3])
    expected = snapshot(model, opt)

    resumed = TINY_MODELS["cvt"]().train()
    resumed.load_state_dict(saved_model)
    opt2, offload2 = fresh(resumed)
    opt2.load_state_dict(saved_opt)
    host = {id(v) for v in offload2._host_copies.values()}
    assert host and {id(v) for s in opt2.state.values() for v in s.values()} == host
    steps(resumed, opt2, [2, 3])
    assert differing(expected, snapshot(resumed, opt2)) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: host-device transfers and CPU vs GPU EMA arithmetic")
@pytest.mark.parametrize("family", ["swin", "cvt"])
def test_on_a_gpu_offloaded_optimizer_and_ema_give_the_same_bits(family):
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model, optimizer, ema = train_steps(TINY_MODELS[family](), STEPS, device="cuda")
    model_o, optimizer_o, ema_o = train_steps(TINY_MODELS[family](), STEPS, device="cuda", offload=True,
                                              ema_device="cpu")
    assert all(v.device.type == "cpu" for s in optimizer_o.state.values() for v in s.values())
    assert differing(snapshot(model, optimizer), snapshot(model_o, optimizer_o)) == []
    assert differing({k: v.cpu() for k, v in ema.items()}, ema_o) == []
