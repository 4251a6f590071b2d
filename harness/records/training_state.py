"""A training's own saved state (state.pt, linear_bs8.pt), read back to resume: never by running code
(weights_only), and either whole and of this run or refused in one line naming the file and the fix.

A file cut short by a crash or a full disk, replaced by another pickle, or of another shape would
otherwise end a resume in a traceback (or, for a pickle that runs code, worse).
"""
import numbers
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from harness.errors import UserError

# What restoring a state of the wrong shape raises: missing keys, tensors of another size, an
# optimizer of other groups, a value of another type.
DOES_NOT_FIT = (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError)


def read_state(path: str | Path, keys: Iterable[str], fix: str) -> dict[str, Any]:
    """The dict saved in `path` holding at least `keys`; `fix`: what to do instead, for the message."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or a pickle needing code to load
        why = str(e).strip().splitlines()[0].split(". ")[0][:160] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            why = "it holds objects that only code could rebuild: refused unread"
        raise UserError(f"{path} is not a readable training state ({why}); {fix}") from None
    missing = [k for k in keys if k not in state] if isinstance(state, dict) else list(keys)
    if missing:
        raise UserError(f"{path} is not a training state of this command (no {missing[0]!r}); {fix}")
    return state


def check_epoch(path: str | Path, epoch: object, fix: str) -> None:
    """A saved epoch count must be a whole number >= 0 (a resume continues after it)."""
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise UserError(f"{path} holds epoch {epoch!r}, not a count of finished epochs; {fix}")


@contextmanager
def restoring(path: str | Path, fix: str) -> Iterator[None]:
    """Restore from `path` inside this block: a part that does not fit this run is one line."""
    try:
        yield
    except UserError:
        raise
    except DOES_NOT_FIT as e:
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise UserError(f"{path} does not fit this run ({type(e).__name__}: {detail}); {fix}") from None
