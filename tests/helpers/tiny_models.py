"""Tiny registered models of one or two resolutions, each with its own image set, normalisation and
batch size, and a manifest naming them: for shared-decode and torchrun tests."""
import json

from tiny_convnet import TinyConvNet

from harness.inputs.yaml_files import dump_yaml
from harness.manifest import DEFAULT_MANIFEST, read_yaml
from harness.models import register_model

# id: (resolution, image set, normalisation, batch size, width)
MODELS = {"sd-a": (32, "all", "imagenet", 4, 4), "sd-b": (32, "all", "none", 5, 3),
          "sd-c": (32, "annotated", "none", 3, 2), "sd-d": (32, "annotated", "imagenet", 4, 5),
          "sd-e": (24, "all", "imagenet", 4, 4)}


@register_model
def tiny_shared_net(num_classes=80, width=4, **_):
    return TinyConvNet(num_classes, width, pool=2)


def write_manifest(folder):
    """The default manifest with its models replaced by MODELS (each cloned from q2l-r101-448)."""
    data = read_yaml(DEFAULT_MANIFEST.read_text())
    base, models = data["models"]["q2l-r101-448"], {}
    for mid, (res, image_set, norm, bs, width) in MODELS.items():
        entry = json.loads(json.dumps(base))
        entry["arch"] = {"name": "tiny_shared_net", "num_classes": 80, "width": width}
        entry["eval"].update(resolution=res, image_set=image_set, normalize=norm, batch_size=bs)
        models[mid] = entry
    data["models"] = models
    path = folder / "manifest.yaml"
    path.write_text(dump_yaml(data))
    return path
