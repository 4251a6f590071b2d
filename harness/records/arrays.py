"""Reading a saved array (scores, labels, masks) that a user or another machine handed over."""
from pathlib import Path

import numpy as np

from harness.errors import UserError


def load_array(path: str | Path, what: str) -> np.ndarray:
    """The .npy at `path`, never unpickled; a missing or unreadable file is one line naming `what`."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{what} file not found: {path}")
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"cannot read {what} from {path} ({e}); pass a .npy array saved with numpy.save")
