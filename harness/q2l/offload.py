"""AdamW's state on the host between steps: moved to the device for the step, back after it.

The step itself is the optimizer's own `step()`, unchanged, on the device the state would live on
without offloading: the same kernel on the same tensors, so the same bits. It reads its learning
rate and betas from the param groups at every step, as OneCycleLR (cycle_momentum) rewrites them
every step; nothing is cached here. Hooks do the moving, so the optimizer stays the object that
OneCycleLR and GradScaler expect. A step that GradScaler skips (inf/NaN gradients) moves nothing.

The EMA copy is offloaded by creating it on the host (the authors' ModelEma(model, decay,
device="cpu"): its update reads each of the model's tensors to the host); see MemoryPlan.ema_device.
"""
import logging

import torch

logger = logging.getLogger(__name__)


class OptimizerStateOffload:
    """Keep `optimizer`'s state tensors on `host` except during `step()`.

    A state tensor is offloaded when it lives on its parameter's device (AdamW's moments; its step
    counter stays where AdamW keeps it, on the CPU unless capturable/fused). Host copies are
    allocated once and written in place after each step. After `optimizer.load_state_dict` (a
    resume) the loaded state is moved to the host at once, before the next forward needs the room.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, host: str | torch.device = "cpu"):
        self.optimizer = optimizer
        self.host = torch.device(host)
        self._host_copies = {}  # (param, key) -> the state tensor's host copy
        self._handles = [optimizer.register_step_pre_hook(self._to_device),
                         optimizer.register_step_post_hook(self._to_host)]
        if hasattr(optimizer, "register_load_state_dict_post_hook"):  # torch >= 2.2
            self._handles.append(optimizer.register_load_state_dict_post_hook(lambda opt: self.offload_now()))
        self.offload_now()

    def _to_device(self, optimizer, args, kwargs):
        for (param, key), host_copy in self._host_copies.items():
            self.optimizer.state[param][key] = host_copy.to(param.device, copy=True)

    def _to_host(self, optimizer, args, kwargs):
        self.offload_now()

    def offload_now(self) -> None:
        """Move every state tensor that is on its parameter's device into its host copy."""
        for param, state in self.optimizer.state.items():
            for key, value in state.items():
                if not torch.is_tensor(value) or value.device != param.device:
                    continue
                host_copy = self._host_copies.get((param, key))
                if host_copy is None or host_copy.shape != value.shape or host_copy.dtype != value.dtype:
                    host_copy = self._host_copies[(param, key)] = torch.empty_like(value, device=self.host)
                elif value is host_copy:  # already home (the device is the host)
                    continue
                host_copy.copy_(value)
                state[key] = host_copy

    def host_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._host_copies.values())

    def remove(self) -> None:
        """Stop offloading (the state stays where it is now: on the host)."""
        for handle in self._handles:
            handle.remove()
