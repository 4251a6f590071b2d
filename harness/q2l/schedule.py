"""The authors' optimizer and learning-rate schedule, built as main_mlc.py builds them.

AdamW over every parameter that requires a gradient (one group: weight decay on biases and norms
too), betas (0.9, 0.999), eps 1e-8, lr `lr * B / 256`; then OneCycleLR(max_lr=lr, steps_per_epoch,
epochs, pct_start=0.2) with torch's other defaults, which at once overwrites that lr with lr / 25
and, through cycle_momentum, AdamW's beta1 with 0.95. Each scheduler.step() (after every optimizer
step, also one GradScaler skipped) sets both: the lr rises to `lr` over the first 20 % of the steps
and falls to lr / 25 / 1e4 by the last, beta1 goes 0.95 -> 0.85 -> 0.95 inversely. The pair is
torch's own classes built with their arguments, so lr and beta1 are their floats at every step
(tests/q2l/test_q2l_schedule.py: fixtures from their lines run under torch 1.9.1 and today's).

`steps_per_epoch` is their len(train_loader): DistributedSampler (padding each rank to
ceil(N / W) images) under a DataLoader of B / W images per rank with drop_last.
"""
import math

import torch


def steps_per_epoch(n_images: int, batch_size: int, world_size: int = 1) -> int:
    """len(train_loader) of their main_mlc.py on `world_size` processes with global batch `batch_size`."""
    return math.ceil(n_images / world_size) // (batch_size // world_size)


def build_optimizer(model: torch.nn.Module, lr: float, batch_size: int, weight_decay: float,
                    **adamw_options) -> torch.optim.AdamW:
    """Their AdamW (`adamw_options`, e.g. foreach, are passed on: they choose an implementation)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": params}], batch_size / 256 * lr, betas=(0.9, 0.999), eps=1e-08,
                             weight_decay=weight_decay, **adamw_options)


def build_schedule(optimizer: torch.optim.Optimizer, lr: float, steps: int, epochs: int):
    """Their OneCycleLR; it sets the optimizer's lr and beta1 for the first step."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, steps_per_epoch=steps, epochs=epochs,
                                               pct_start=0.2)
