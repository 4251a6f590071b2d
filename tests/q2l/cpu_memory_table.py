"""The CPU saved-tensor table of docs/q2l-training.md ("Memory"): Query2Label models at their real
size (random weights), saved-tensor bytes of one training-mode forward at 1 and 2 images, extended
linearly to the batch, plus the counted parameter, gradient, AdamW and EMA bytes, for each plan.

    PYTHONPATH=. python tests/q2l/cpu_memory_table.py [--batch 16] [--models q2l-swinl-384 ...]

Columns in GiB: need = max(forward/backward peak, step peak); saved = the saved-tensor bytes a plain
backward keeps, or with checkpointing those kept through the forward; the largest recompute = one
block's insides during the backward; state = weights, buffers, gradients and whatever of the AdamW
moments and EMA copy stays on the device; step peak = state with the AdamW moments back for the step.
CPU measurements, not a GPU's: no CUDA context, no allocator cache, no transient buffers
(activation gradients, workspaces); `amp` is CPU autocast in bfloat16 (2 bytes, as fp16).
About 20 GB of host memory for CvT-w24 at 2 images in fp32: one model a process is kinder
(--models one --precision fp32).
"""
import argparse
import time

from harness.models import create_model
from harness.q2l.micro_batches import BATCH_STATISTICS
from harness.q2l.plan import GIB, candidate_plans, cpu_peak, saved_tensor_bytes, state_bytes

MODELS = ["q2l-r101-448", "q2l-tresl-448", "q2l-swinl-384", "q2l-cvtw24-384"]
FROZEN = {"resnet101": ("conv1", "bn1", "layer1"), "tresnetl": ("body.conv1", "body.layer1")}  # under backbone.0.body


def build(model_id):
    """The model as the authors train it: conv1 and layer1 of the CNNs frozen."""
    model = create_model(model_id)
    for prefix in FROZEN.get(model.arch["backbone"], ()):
        for name, p in model.backbone[0].body.named_parameters():
            if name.startswith(prefix):
                p.requires_grad_(False)
    return model


def rows(model_id, batch, amp):
    model = build(model_id)
    size = model.img_size
    one, two = (saved_tensor_bytes(model, n, size, amp) for n in (1, 2))
    saved_at = {n: {k: one[k] + (n - 1) * (two[k] - one[k]) for k in one} for n in range(1, batch + 1)}
    states = state_bytes(model)
    allowed = model.arch["backbone"] not in BATCH_STATISTICS
    out = []
    for plan in candidate_plans(batch, allowed)[:5]:  # as written ... + micro-batches of B/2
        m = cpu_peak(plan, states, saved_at[plan.micro_batch or batch])
        saved = m.parts.get("saved_bytes", m.parts.get("saved_kept_bytes"))
        recompute = m.parts.get("saved_recompute_bytes", 0)
        held = m.parts["backward_peak_bytes"] - saved - recompute
        out.append([model_id, "bf16 autocast" if amp else "fp32", plan.describe()]
                   + [f"{n / GIB:.2f}" for n in (m.peak_bytes, saved, recompute, held, m.parts["step_peak_bytes"])])
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    args = parser.parse_args()
    print(f"| model | precision | plan (batch {args.batch}) | need | saved (kept) | largest recompute "
          f"| state in forward/backward | step peak |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for model_id in args.models:
        for amp in {"fp32": (False,), "bf16": (True,), "both": (False, True)}[args.precision]:
            t = time.time()
            for r in rows(model_id, args.batch, amp):
                print("| " + " | ".join(r) + " |", flush=True)
            print(f"<!-- {model_id} amp={amp}: {time.time() - t:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
