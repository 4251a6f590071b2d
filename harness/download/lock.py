"""weights_manifest.lock.yaml: the sha256 first seen for each file the manifest leaves unpinned.

{model_id: {role: {sha256, size, source, fetched_at}}}. Once recorded, a file with another
hash is refused, so an unpinned release cannot silently change under a reproduction.
"""
import os
import time
from pathlib import Path

import yaml

from harness.errors import UserError

HEADER = ("# sha256 observed at the first download of each file the manifest leaves unpinned.\n"
          "# Written by `harness download`; a later file with another hash is refused.\n"
          "# To pin for good, copy a sha256 into weights_manifest.yaml.\n")


def read_lock(path):
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); fix or delete the file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of model ids; fix or delete the file")
    return data


def lock_entry(path, model_id, role):
    return (read_lock(path).get(model_id) or {}).get(role)


def record_lock(path, model_id, role, sha256, size, source):
    path = Path(path)
    data = read_lock(path)
    data.setdefault(model_id, {})[role] = {
        "sha256": sha256, "size": size, "source": source,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(HEADER + yaml.safe_dump(data, sort_keys=True))
    os.replace(tmp, path)
