"""C-Tran checkpoints: ours (safetensors, the arch in its metadata) and the authors' best_model.pt.

Theirs (utils/logger.py) is torch.save({'epoch', 'state_dict', 'valid_mAP', ...}); with several GPUs
their DataParallel prefixes every key with `module.`. Both load strictly into harness.models.ctran.
"""
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness.checkpoints import find_state_dict, read_pickle
from harness.errors import UserError

FORMAT = "ctran state dict"


def save(path, model, arch, extra=None):
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "arch": json.dumps(arch), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    save_file(state, tmp, metadata=meta)
    tmp.replace(path)  # a checkpoint is whole or absent


def read(path):
    """(state dict, arch or None, metadata): arch from our metadata; None for the authors' file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass the best.safetensors of a `harness ctran train` run")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as e:
            raise UserError(f"{path} is not a readable safetensors file ({e}); pass a C-Tran checkpoint")
        if meta.get("format") != FORMAT:
            raise UserError(f"{path} is not a C-Tran checkpoint (format {meta.get('format')!r}); pass the "
                            f"best.safetensors of a `harness ctran train` run")
        return state, json.loads(meta["arch"]), {k: json.loads(v) for k, v in meta.items() if k not in ("format", "arch")}

    return find_state_dict(read_pickle(path)), None, {}


def load_into(model, state, path):
    """Strict load; a checkpoint of another model or size is one line naming what differs."""
    check_fits(model.state_dict(), state, path)
    model.load_state_dict(state, strict=True)


def check_fits(ours, state, path):
    """`state` has the keys and shapes of `ours` (a model's state dict, possibly on the meta device), or
    one line naming what differs."""
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise UserError(f"{path} is not a checkpoint of this C-Tran model ({len(missing)} keys missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} of another shape, e.g. {first}); pass a "
                        f"checkpoint of this model (from `harness ctran train` or the authors' main.py)")
