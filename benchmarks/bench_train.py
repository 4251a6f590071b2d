"""Images/s of a Query2Label training step: the harness's loop beside a loop shaped like the authors' train(),
same model, batch and device, in one run; then the harness with each memory technique, and its peak memory.

    .venv/bin/python benchmarks/bench_train.py [--model q2l-r101-448] [--size smoke|full] [--batch-size 8]
                                               [--device cpu|cuda] [--steps 6] [--warmup 2] [--rounds 3] [--amp]

Each variant starts from the same seeded weights and trains on the same pre-made batches (no data loading:
the step alone): forward and loss under autocast (--amp: fp16 on a GPU), backward through GradScaler,
AdamW, OneCycleLR, EMA update, i.e. everything their train() does per iteration. The variants run in turn,
--rounds times (so a busy machine slows them alike); each step is timed (wall and this process's CPU
time), and images/s is given from the median step and from the fastest.
  theirs    a loop shaped like their train(): their per-step order and their meters (loss.item(), and
            torch.cuda.max_memory_allocated() every step on a GPU), their ModelEma's update
  harness   harness.q2l.train.train_epoch with the same model, techniques off, then each technique on
Peak memory: on a GPU PyTorch's max allocated over the timed steps; on the CPU the memory plan's measure
(harness.q2l.plan.measure_cpu: the bytes autograd saves for the backward plus parameters, gradients, AdamW
moments and the EMA on the device), a lower bound of a GPU's peak.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.distributed import World  # noqa: E402
from harness.manifest import get_spec  # noqa: E402
from harness.q2l import backbones, train  # noqa: E402
from harness.q2l.ema import ModelEma  # noqa: E402
from harness.q2l.loss import asymmetric_loss  # noqa: E402
from harness.q2l.memory import MemoryPlan, apply_memory_plan  # noqa: E402
from harness.q2l.micro_batches import BATCH_STATISTICS  # noqa: E402
from harness.q2l.recipe import load_recipe  # noqa: E402
from harness.q2l.schedule import build_optimizer, build_schedule  # noqa: E402

MIB = 1024 * 1024


def make_model(recipe, size, seed=0):
    torch.manual_seed(seed)
    model = backbones.build_model(recipe, smoke=size == "smoke")
    backbones.freeze(model)
    return model


def batches(n, batch_size, image_size, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device),
             (torch.rand(batch_size, 80, generator=g) < 0.05).double().to(device), torch.arange(batch_size))
            for _ in range(n)]


def loss_settings(recipe):
    return {"gamma_neg": recipe["gamma_neg"], "gamma_pos": recipe["gamma_pos"], "clip": recipe["loss_clip"],
            "eps": recipe["eps"], "disable_torch_grad_focal_loss": recipe["dtgfl"]}


def their_loop(model, ema, optimizer, scheduler, data, device, amp, recipe, on_batch):
    """A loop shaped like their train(): their order, their meters (loss.item(), max memory on a GPU)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    model.train()
    losses = []
    for images, target, _ in data:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            output = model(images)
            loss = asymmetric_loss(output, target, **loss_settings(recipe))
        losses.append(loss.item())
        if device.type == "cuda":
            torch.cuda.max_memory_allocated()
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        ema.update(model)
        on_batch(len(images))


class StepClock:
    """Wall and CPU seconds of each step (stamped after it; a GPU is synchronised first)."""

    def __init__(self, device):
        self.device, self.wall, self.cpu = device, [], []
        self.start()

    def start(self):
        self._t, self._c = time.perf_counter(), time.process_time()

    def __call__(self, n_images):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        self.wall.append(t - self._t)
        self.cpu.append(c - self._c)
        self._t, self._c = t, c


def run_variant(name, plan, recipe, args, device, data):
    """(wall seconds per timed step, CPU seconds per timed step, peak MiB on a GPU or None) of one variant
    from fresh weights. On a shared CPU the CPU time is the steadier figure: other processes stretch the
    wall time, not the work."""
    model = make_model(recipe, args.size).to(device)
    optimizer = build_optimizer(model, recipe["lr"], args.batch_size, recipe["weight_decay"])
    if name != "theirs":
        apply_memory_plan(plan, model, optimizer)
    ema = ModelEma(model, recipe["ema_decay"], device=plan.ema_device)
    scheduler = build_schedule(optimizer, recipe["lr"], len(data), 1)
    amp = args.amp and device.type == "cuda"
    parts = train.Parts(model, model, ema, optimizer, scheduler, loss_settings(recipe), None, str(device),
                        torch.float16 if amp else None, 0, World(), plan.micro_batch)

    def steps(chunk, clock):
        if name == "theirs":
            their_loop(model, ema, optimizer, scheduler, chunk, device, amp, recipe, clock)
        else:
            train.train_epoch(parts, chunk, 0, on_batch=clock)

    steps(data[:args.warmup], lambda n: None)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    clock = StepClock(device)
    steps(data[args.warmup:], clock)
    peak = torch.cuda.max_memory_allocated() / MIB if device.type == "cuda" else None
    return clock.wall, clock.cpu, peak


def cpu_peak(plan, recipe, args):
    """The memory plan's CPU measure of one step (bytes saved for the backward + states on the device)."""
    from harness.q2l.plan import measure_cpu

    size = backbones.sizes(recipe, args.size == "smoke")["img_size"]
    return measure_cpu(lambda: make_model(recipe, args.size), plan, args.batch_size, size, False).peak_bytes / MIB


def variants(recipe, batch_size):
    half = batch_size // 2 if batch_size > 1 and recipe["backbone"] not in BATCH_STATISTICS else None
    out = [("theirs", MemoryPlan()), ("harness", MemoryPlan()),
           ("harness + checkpointing", MemoryPlan(activation_checkpointing=True)),
           ("harness + EMA on CPU", MemoryPlan(offload_ema=True)),
           ("harness + AdamW state on CPU", MemoryPlan(offload_optimizer=True))]
    if half:
        out.append((f"harness + micro-batches of {half}", MemoryPlan(micro_batch=half)))
    out.append(("harness, all of them", MemoryPlan(True, True, True, half)))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="q2l-r101-448")
    parser.add_argument("--size", choices=("smoke", "full"), default="smoke",
                        help="smoke: the --smoke model (tiny backbone of the family, 64 px); full: the real one")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (GPU), as their --amp")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU); default: torch's")
    parser.add_argument("--only", help="comma-separated variant names, e.g. theirs,harness (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA GPU visible")
    recipe = load_recipe(get_spec(args.model), fetch_files=False)
    size = backbones.sizes(recipe, args.size == "smoke")["img_size"]
    data = batches(args.warmup + args.steps, args.batch_size, size, device)
    chosen = variants(recipe, args.batch_size)
    if args.only:
        chosen = [(n, p) for n, p in chosen if n in args.only.split(",")]
    speeds, cpu_speeds, peaks = {n: [] for n, _ in chosen}, {n: [] for n, _ in chosen}, {}  # seconds per step
    if device.type == "cpu":  # measured first: a model-level count, the same for their loop
        peaks = {name: cpu_peak(plan, recipe, args) for name, plan in chosen}
    for _ in range(args.rounds):
        for name, plan in chosen:
            wall, cpu, peak = run_variant(name, plan, recipe, args, device, data)
            speeds[name] += wall
            cpu_speeds[name] += cpu
            if peak is not None:
                peaks[name] = peak
    print(f"{args.model} ({args.size}, {size} px), batch {args.batch_size}, {args.device}"
          f"{' fp16' if args.amp and device.type == 'cuda' else ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds of {args.steps} timed steps")
    print(f"{'variant':34} {'images/s':>9} {'best':>9} {'per CPU s':>9} {'best':>9} {'peak MiB':>9}")
    rate = {}
    for name, _ in chosen:
        rate[name] = [args.batch_size / statistics.median(t) for t in (speeds[name], cpu_speeds[name])]
        best = [args.batch_size / min(t) for t in (speeds[name], cpu_speeds[name])]
        peak = "n/a" if peaks.get(name) is None else f"{peaks[name]:.0f}"
        print(f"{name:34} {rate[name][0]:9.2f} {best[0]:9.2f} {rate[name][1]:9.2f} {best[1]:9.2f} {peak:>9}")
    print(f"harness / theirs (techniques off): {rate['harness'][0] / rate['theirs'][0]:.3f} (wall time), "
          f"{rate['harness'][1] / rate['theirs'][1]:.3f} (CPU time); {args.rounds * args.steps} steps each, "
          f"images/s from the median step, best from the fastest")


if __name__ == "__main__":
    main()
