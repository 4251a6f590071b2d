"""`--vram-budget`: budgets read strictly, plans tried in order from measured peaks, the first that
fits chosen, a budget below every plan refused naming the smallest need. CPU measurements of tiny
models (saved-tensor bytes + counted state); the CUDA measurement runs only where a GPU is."""
import pytest
import torch
from memory_helpers import IMG, NUM_CLASSES, TINY_MODELS, batch

from harness.errors import UserError
from harness.q2l.checkpointing import apply_activation_checkpointing, checkpointed_block_types
from harness.q2l.memory import MemoryPlan
from harness.q2l.plan import (
    GIB,
    MIB,
    Measured,
    SavedTensors,
    candidate_plans,
    choose_plan,
    measure_cpu,
    measure_cuda,
    parse_vram_budget,
    plan_for_budget,
    state_bytes,
)


@pytest.mark.parametrize("text, expected", [("12GB", 12 * GIB), ("12GiB", 12 * GIB), ("11.5G", int(11.5 * GIB)),
                                            ("8000MiB", 8000 * MIB), (" 12 gb ", 12 * GIB), ("512MB", 512 * MIB)])
def test_budgets_are_read_with_their_unit(text, expected):
    assert parse_vram_budget(text) == expected


@pytest.mark.parametrize("text", ["12", "twelve", "12TB", "-1GB", "0GB", "1.2.3GB", "", "none", "12 G B", "GB"])
def test_a_budget_that_cannot_be_read_is_one_line(text):
    with pytest.raises(UserError) as e:
        parse_vram_budget(text)
    assert "\n" not in str(e.value) and "12GB" in str(e.value)


def test_plans_add_one_technique_at_a_time_then_halve_the_micro_batch():
    plans = candidate_plans(16, micro_batches_allowed=True)
    assert [p.techniques() for p in plans[:4]] == [
        [], ["activation checkpointing"], ["activation checkpointing", "EMA on CPU"],
        ["activation checkpointing", "EMA on CPU", "AdamW state on CPU"]]
    assert [p.micro_batch for p in plans[4:]] == [8, 4, 2, 1]
    assert all(p.offload_optimizer and p.offload_ema and p.activation_checkpointing for p in plans[4:])
    assert [p.micro_batch for p in candidate_plans(12, True)[4:]] == [6, 3, 2, 1]
    assert len(candidate_plans(16, micro_batches_allowed=False)) == 4


def test_the_first_plan_that_fits_is_chosen_and_every_measurement_kept():
    peaks = iter([30 * GIB, 20 * GIB, 11 * GIB, 9 * GIB])
    plans = candidate_plans(16, True)
    chosen, trials = choose_plan(12 * GIB, plans, lambda plan: Measured(plan, next(peaks), "scripted"))
    assert chosen == plans[2] and [t.peak_bytes for t in trials] == [30 * GIB, 20 * GIB, 11 * GIB]


def test_a_budget_below_every_plan_names_the_smallest_measured_need():
    peaks = {p: (40 - i) * GIB for i, p in enumerate(candidate_plans(16, False))}
    peaks[MemoryPlan(activation_checkpointing=True)] = None  # ran out of memory
    with pytest.raises(UserError) as e:
        choose_plan(8 * GIB, list(peaks), lambda plan: Measured(plan, peaks[plan], "scripted"))
    message = str(e.value)
    assert "\n" not in message and "37.00 GiB" in message and "AdamW state on CPU" in message and "8.00 GiB" in message
    with pytest.raises(UserError, match="every memory plan ran out of memory"):
        choose_plan(8 * GIB, list(peaks)[:2], lambda plan: Measured(plan, None, "scripted"))


@pytest.mark.parametrize("family", ["swin", "cvt", "r101"])
def test_the_kept_bytes_of_checkpointing_are_what_a_checkpointed_forward_saves(family):
    """The CPU measure attributes each saved tensor to its block in a plain forward; a real
    checkpointed forward saves exactly what is kept outside the blocks plus the blocks' inputs."""
    model = TINY_MODELS[family]().train()
    images, _ = batch(0)
    meter = SavedTensors(model, checkpointed_block_types())
    torch.manual_seed(0)
    out = meter.run(lambda: model(images))
    kept, recompute = meter.checkpointed_bytes()
    apply_activation_checkpointing(model)
    real = SavedTensors(model, ())
    torch.manual_seed(0)
    out_checkpointed = real.run(lambda: model(images))
    assert torch.equal(out, out_checkpointed)
    assert real.all_bytes() == kept
    assert kept + recompute < meter.all_bytes()


def test_cpu_measurements_fall_plan_by_plan_and_scale_with_the_micro_batch():
    plans = candidate_plans(4, micro_batches_allowed=True)
    measured = [measure_cpu(TINY_MODELS["swin"], plan, 4, IMG) for plan in plans]
    peaks = [m.peak_bytes for m in measured]
    assert peaks[0] > peaks[1] > peaks[2] > peaks[3]
    states = state_bytes(TINY_MODELS["swin"]())
    assert peaks[1] - peaks[2] == states["ema_copy"]  # the EMA left the device
    with_two, with_one = measured[4].parts, measured[5].parts  # micro-batches of 2 and 1 images
    assert with_two["saved_kept_bytes"] == 2 * with_one["saved_kept_bytes"]
    assert measured[3].parts["saved_kept_bytes"] == 2 * with_two["saved_kept_bytes"]
    assert all(m.source.startswith("cpu: saved tensors") for m in measured)
    assert measured[0].as_record()["plan"]["techniques"] == []


def test_plan_for_budget_on_the_cpu_picks_checkpointing_when_it_is_enough():
    def make():
        return TINY_MODELS["swin"]()

    as_written = measure_cpu(make, MemoryPlan(), 4, IMG).peak_bytes
    checkpointed = measure_cpu(make, MemoryPlan(activation_checkpointing=True), 4, IMG).peak_bytes
    budget = f"{(as_written + checkpointed) / 2 / MIB:.3f}MiB"
    plan, trials = plan_for_budget(budget, make, True, 4, IMG, NUM_CLASSES, "cpu")
    assert plan == MemoryPlan(activation_checkpointing=True) and len(trials) == 2
    with pytest.raises(UserError, match="smallest measured need"):
        plan_for_budget("0.001MiB", make, True, 4, IMG, NUM_CLASSES, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_measurements_fall_with_checkpointing_and_offload():
    plans = candidate_plans(8, micro_batches_allowed=True)
    measured = [measure_cuda(TINY_MODELS["swin"], plan, 8, IMG, NUM_CLASSES, "cuda") for plan in plans[:4]]
    allocated = [m.parts["torch_max_allocated_bytes"] for m in measured]
    assert allocated[0] > allocated[1] >= allocated[2] >= allocated[3]
    assert all(m.peak_bytes >= a for m, a in zip(measured, allocated))
