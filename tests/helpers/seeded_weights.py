"""Random weights that two implementations can both draw: each tensor from its own generator
seeded by its key's CRC32, so the same key gets the same values in any model, in any order.
(A fixture made by the authors' code then needs no weights, only its outputs.)"""
import zlib

import torch


def fill_seeded(model, skip=()):
    """Overwrite every float parameter and buffer of `model` in place; returns the model.
    BatchNorm variances are kept positive; everything else is scaled to keep activations O(1)."""
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not tensor.is_floating_point() or key in skip:
                continue
            g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
            if key.endswith("running_var"):
                values = 0.5 + torch.rand(tensor.shape, generator=g)
            elif tensor.dim() >= 2:
                values = torch.randn(tensor.shape, generator=g) / (tensor[0].numel() ** 0.5)
            elif key.endswith("weight"):
                values = torch.randn(tensor.shape, generator=g)  # negative ABN weights test |w| + eps
            else:
                values = 0.1 * torch.randn(tensor.shape, generator=g)
            tensor.copy_(values)
    return model
