"""The evaluation batch size, chosen as the authors' script chose it.

Query2Label's `q2l_infer.py` applies `config_new.json` over its command line, so the released
config's `batch_size` (e.g. 128) set the batch, not `-b`. Batch size moves the last bits of fp32
scores (and through ties, mAP), so the harness does the same; `--batch-size` overrides it and the
record calls that a deviation. Models without such a config use the manifest's `eval.batch_size`.
"""
from pathlib import Path

from harness.checkpoints import read_config
from harness.errors import UserError
from harness.manifest import ModelSpec


def config_batch_size(config_path: str | Path | None) -> int | None:
    """The `batch_size` of an authors' config_new.json, or None when it has none."""
    if not config_path:
        return None

    value = read_config(config_path).get("batch_size")
    if value is None:
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(size) != str(value).strip():
        raise UserError(f"{config_path} has batch_size {value!r}, not a positive whole number; fix the file "
                        f"or pass --batch-size N")
    return size


def choose_batch_size(spec: ModelSpec, asked: int | None, config_path: str | Path | None) -> tuple[int, str, list[str]]:
    """(batch size, where it came from, deviations [text]) for a run record."""
    from_config = config_batch_size(config_path)
    if asked is None:
        if from_config is not None:
            return from_config, "config_new.json batch_size (the authors' q2l_infer.py applies it over -b)", []
        return spec.eval.batch_size, "manifest eval.batch_size", []
    default, whose = ((from_config, "the authors' config_new.json") if from_config is not None
                      else (spec.eval.batch_size, "the manifest"))
    if asked == default:
        return asked, f"--batch-size (the same as {whose})", []
    return asked, "--batch-size", [f"batch size {asked} instead of {default} ({whose}): the last bits of the "
                                   f"scores differ, and through tied scores mAP can move"]
