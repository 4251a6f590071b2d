"""The switches that change float32 results on a GPU, set for a run and written into its record.

TF32 rounds matmul and convolution inputs to 10 mantissa bits on Ampere and later GPUs. The
authors' torch 1.9 had matmul TF32 on by default there; today's torch has it off for matmuls
but on for cuDNN convolutions. `--tf32 off` (the default) turns both off: the float32 reference.
`--tf32 on` turns both on, as the authors' GPUs ran. On a CPU none of this changes a bit.
"""
import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from harness.errors import UserError


def state() -> dict[str, Any]:
    """What the record says: each switch as torch holds it now."""
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextlib.contextmanager
def tf32_mode(tf32: str) -> Iterator[dict[str, Any]]:
    """Set TF32 on or off (and cuDNN to its deterministic, untuned algorithms) for the span; restore after."""
    if tf32 not in ("on", "off"):
        raise UserError(f"--tf32 must be on or off (got {tf32!r}); off is the float32 reference")
    saved = state()
    on = tf32 == "on"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield {"tf32": tf32, **state()}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = saved["cudnn_allow_tf32"]
        torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.set_float32_matmul_precision(saved["float32_matmul_precision"])
