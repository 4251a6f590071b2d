"""A tiny model in the Query2Label family with a checkpoint saved as the authors save theirs, for
evaluation tests that need a released-style checkpoint and config_new.json but not a real network."""
import torch
from conftest import tiny_manifest
from torch import nn

from harness.models import register_model


@register_model
def tiny_release_net(num_classes=80, **_):
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, num_classes))


def make_release(folder, config=None, **eval_overrides):
    """(manifest, checkpoint): a one-entry manifest 'tiny-q2l' and its checkpoint (config_new.json beside)."""
    import json

    manifest = tiny_manifest(folder, "tiny-q2l", {"name": "tiny_release_net", "num_classes": 80},
                             **{"resolution": 32, "batch_size": 4, **eval_overrides})
    torch.manual_seed(0)
    state = tiny_release_net().state_dict()
    checkpoint = folder / "checkpoint.pkl"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in state.items()}}, checkpoint)
    if config is not None:
        (folder / "config_new.json").write_text(json.dumps(config))
    return manifest, checkpoint
