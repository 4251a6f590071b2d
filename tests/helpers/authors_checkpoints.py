"""A small Q2L saved as the authors' training script saves it, and a manifest naming it: for the
checkpoint, eval and reproduce tests."""
import numpy as np
import torch
from conftest import SMALL_Q2L

from harness.inputs.yaml_files import dump_yaml
from harness.manifest import DEFAULT_MANIFEST, read_yaml
from harness.models import build_from_arch

SMALL = SMALL_Q2L  # conftest: a small Q2L with the authors' key names


def randomised(arch, seed):
    torch.manual_seed(seed)
    model = build_from_arch(arch).eval()
    with torch.no_grad():  # non-trivial norms and statistics, negative ABN weights included
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn_like(t) * 0.1)
            elif name.endswith("weight") and t.dim() == 1:
                t.copy_(torch.randn_like(t))
    return model


def save_authors_checkpoint(model, path, **extra):
    """As the authors' training script saves it (from a DistributedDataParallel model)."""
    opt = torch.optim.AdamW(model.fc.parameters(), lr=1e-4)
    model.fc(torch.randn(1, 80, model.transformer.d_model)).sum().backward()
    opt.step()
    torch.save({"epoch": 12, "arch": "Q2L-TResL_22k-448",
                "state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                "best_mAP": np.float64(89.25), "optimizer": opt.state_dict(), **extra}, path)
    return path


def small_q2l_manifest(tmp_path):
    """Two Q2L entries built small, their files reachable only through --weights-dir."""
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    models = {}
    for mid in ("q2l-tresl22k-448", "q2l-r101-448"):
        entry = data["models"][mid]
        entry["arch"] = dict(SMALL)
        entry["eval"].update(resolution=64, batch_size=4)
        for f in entry["files"].values():  # sources nobody can reach: only --weights-dir can serve
            f["sources"] = [{"type": "http", "url": "http://127.0.0.1:9/none"}]
        models["small-" + mid] = entry
    data["models"] = models
    path = tmp_path / "manifest.yaml"
    path.write_text(dump_yaml(data))
    return path
