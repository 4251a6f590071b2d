"""Checks of the numbers a user passes to the MLSPL commands, made before any work starts."""
import math
import numbers

from harness.errors import UserError


def whole(flag, value, minimum=1, fix=""):
    """`value` must be an int >= minimum (flag: how the user set it, e.g. '--batch-size')."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        fix = fix or f"pass {flag} N with N >= {minimum}"
        raise UserError(f"{flag} {value!r}: must be a whole number >= {minimum}; {fix}")


def positive(flag, value):
    """`value` must be a finite number > 0 (a learning rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{flag} {value!r}: must be a number > 0; pass e.g. {flag} 1e-3")


def batch_fits(flag, batch_size, split_sizes, fix):
    """Every MLSPL loader drops its last partial batch, so a batch larger than a split sees none of it."""
    for split, n in split_sizes.items():
        if batch_size > n:
            raise UserError(f"{flag} {batch_size} is larger than the {split} split ({n} images), whose loader drops "
                            f"its last partial batch; {fix} <= {min(split_sizes.values())}")


def seed(value):
    """A torch seed: a whole number in [0, 2**64)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**64:
        raise UserError(f"--seed {value!r}: must be a whole number from 0 to 2**64 - 1; pass e.g. --seed 1200")
