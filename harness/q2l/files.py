"""The files a Query2Label training reads besides COCO: the pretrained backbones (manifest section
`pretrained_backbones`, as their backbone.py loads them) and the authors' training logs (`training_logs`).

Each is fetched like a release file (hand-placed under --weights-dir, the cache, then its sources) and
verified against a pinned or locked sha256; an unpinned one is locked only once it has been read (a
backbone loaded into its model, a log parsed), so a wrong file never poisons the lock.
"""
from dataclasses import dataclass

from harness.errors import UserError
from harness.manifest import ModelSpec, _Field, _parse_files, check_file_section, read_manifest_data


@dataclass(frozen=True)
class PretrainedBackbone:
    id: str
    backbone: str  # the authors' --backbone name it initialises
    description: str
    spec: ModelSpec  # {"checkpoint": its file}: what download.fetch and the lock take


def _section(manifest_path, name):
    path, manifest = read_manifest_data(manifest_path)
    data = manifest.get(name) or {}
    check_file_section(path, name, data)
    return path, data


def _file_spec(path, entry_id, entry, role, family="q2l"):
    files = _parse_files(_Field(path, entry_id), {role: entry}, extra_keys=("backbone", "description"))
    return ModelSpec(id=entry_id, family=family, description=entry.get("description", ""), arch={}, paper={},
                     released=True, files=files, manifest_path=path.resolve())


def pretrained_backbone(backbone: str, manifest_path=None) -> PretrainedBackbone:
    """The pretrained file their backbone.py loads for `backbone` (their --backbone name)."""
    path, data = _section(manifest_path, "pretrained_backbones")
    for entry_id, entry in data.items():
        if isinstance(entry, dict) and entry.get("backbone") == backbone:
            return PretrainedBackbone(entry_id, backbone, entry.get("description", ""),
                                      _file_spec(path, entry_id, entry, "checkpoint"))
    raise UserError(f"{path}: no pretrained_backbones entry for backbone '{backbone}'; add one, or pass "
                    f"--backbone-weights FILE")


def training_log_spec(spec: ModelSpec) -> ModelSpec | None:
    """The authors' training log of manifest model `spec` as a fetchable entry (role `train_log`), or None."""
    path, data = _section(spec.manifest_path, "training_logs")
    entry = data.get(spec.id)
    if not isinstance(entry, dict):
        return None
    return _file_spec(path, spec.id, entry, "train_log")
