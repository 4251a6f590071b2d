"""The authors' ModelEma (main_mlc.py): an exponential moving average of the whole state_dict.

Every entry, buffers included, becomes `decay * e + (1 - decay) * m`, three separate elementwise
operations then a copy into the EMA's tensor, as theirs (tests/q2l/test_q2l_ema.py, fixture made by
their class). That includes integer buffers: BatchNorm's num_batches_tracked (int64) gives a float32
`decay * e + (1 - decay) * m`, which the copy truncates, so the EMA's count stays where it was
until (1 - decay) * (m - e) reaches about 1; what it holds matters only to a BatchNorm with
momentum=None (none of theirs). Their main_mlc.py makes the EMA (decay 0.9997) and updates it after
every step.

`device="cpu"` keeps the copy in host memory (their class has the same argument): each step copies
the model's entries there first. Elementwise multiplications and additions of float32 tensors are
each rounded once to the nearest float32 on CPU and GPU alike (and the Python scalar is rounded to
float32 first on both), so the offloaded EMA holds the same bits as one kept on the GPU.
"""
import copy

import torch


class ModelEma(torch.nn.Module):
    """`module`: the averaged copy (in eval mode). `update(model)` after each step, as their train()."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9997, device: str | torch.device | None = None):
        super().__init__()
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.decay = decay
        self.device = device
        if device is not None:
            self.module.to(device=device)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step: entries paired in state_dict order, as theirs (`model` may be the DDP wrapper)."""
        ema_entries, model_entries = self.module.state_dict().values(), model.state_dict().values()
        if len(ema_entries) != len(model_entries):
            raise ValueError(f"the model has {len(model_entries)} state entries, its EMA {len(ema_entries)}")
        for ema_v, model_v in zip(ema_entries, model_entries):
            if self.device is not None:
                model_v = model_v.to(device=self.device)
            ema_v.copy_(self.decay * ema_v + (1.0 - self.decay) * model_v)
