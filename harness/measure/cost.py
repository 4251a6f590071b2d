"""Static cost of a model: parameter count and GFLOPs of one batch-1 forward pass."""
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model):
    """Parameters (weights that train), not buffers such as a stored position table."""
    return sum(p.numel() for p in model.parameters())


def count_gflops(model, resolution, device):
    """(GFLOPs, None) of one forward at batch 1 and full resolution, or (None, reason).

    FlopCounterMode counts a multiply-add as 2 FLOPs (papers quoting "GFLOPs" often mean MACs).
    """
    x = torch.randn(1, 3, resolution, resolution, device=device)
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    except Exception as e:  # an op without a FLOP formula or a tracing problem: say so, go on
        return None, f"FlopCounterMode failed: {type(e).__name__}: {e}"
    return counter.get_total_flops() / 1e9, None
