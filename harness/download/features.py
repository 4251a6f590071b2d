"""The MLSPL authors' pre-extracted ResNet-50 features: Zenodo record 10162606, COCO files.

They land in <HARNESS_HOME>/features/mlspl/ under their Zenodo names; an archive among
them is unpacked beside itself once. The record's file list is saved there too, so that
offline runs can check that every file is in place.
"""
import json
import shutil
from pathlib import Path

from harness.download import zenodo
from harness.download.errors import SourceError
from harness.download.settings import harness_home, is_offline
from harness.download.url import fetch_url
from harness.errors import UserError

MLSPL_RECORD = "10162606"
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


def features_dir(cache_dir=None):
    return harness_home(cache_dir) / "features" / "mlspl"


def fetch_mlspl_features(cache_dir=None, *, match="coco", verify=False, offline=None, quiet=False):
    """Download (or check) the record's files whose name contains `match`; return their paths."""
    root = features_dir(cache_dir)
    listing = root / f"zenodo-{MLSPL_RECORD}.json"
    if is_offline(offline):
        if not listing.is_file():
            raise UserError(f"offline: the MLSPL features were never downloaded into {root}; download "
                            f"the files of https://zenodo.org/records/{MLSPL_RECORD} there by hand, "
                            "or unset HARNESS_OFFLINE")
        files = {k: zenodo.ZenodoFile(**v) for k, v in json.loads(listing.read_text()).items()}
    else:
        try:
            files = zenodo.list_record(MLSPL_RECORD)
        except SourceError as e:
            raise UserError(f"{e}; check the connection, or download the files of "
                            f"https://zenodo.org/records/{MLSPL_RECORD} by hand into {root}")
        root.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps({k: vars(f) for k, f in files.items()}, indent=1))
    chosen = [f for key, f in sorted(files.items()) if match.lower() in key.lower()]
    if not chosen:
        raise UserError(f"Zenodo record {MLSPL_RECORD} has no file whose name contains '{match}' "
                        f"(it holds: {', '.join(sorted(files)) or 'nothing'})")
    paths = []
    for f in chosen:
        path = fetch_url(f.url, root / Path(f.key).name, md5=f.md5, size=f.size, verify=verify,
                         offline=offline, quiet=quiet)
        _unpack_once(path)
        paths.append(path)
    return paths


def _unpack_once(path):
    if not path.name.lower().endswith(ARCHIVES):
        return
    marker = path.with_name(path.name + ".unpacked")
    if not marker.exists():
        shutil.unpack_archive(path, path.parent)
        marker.write_text("unpacked\n")
