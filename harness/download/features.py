"""The MLSPL authors' pre-extracted ResNet-50 features: Zenodo record 10162606, COCO files.

They land in <HARNESS_HOME>/features/mlspl/ under their Zenodo names; an archive among
them is unpacked beside itself once. The record's file list is saved there too: a complete
cache checked against it needs no network, and only missing or bad files are fetched again.
"""
import json
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from harness.download import zenodo
from harness.download.errors import SourceError, disk_full
from harness.download.settings import harness_home, is_offline
from harness.download.url import Published, fetch_url
from harness.errors import UserError
from harness.files import write_atomically

MLSPL_RECORD = "10162606"
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")
RECORD_URL = f"https://zenodo.org/records/{MLSPL_RECORD}"


def features_dir(cache_dir=None):
    return harness_home(cache_dir) / "features" / "mlspl"


def fetch_mlspl_features(cache_dir=None, *, match="coco", verify=False, offline=None, quiet=False):
    """Download (or check) the record's files whose name contains `match`; return their paths."""
    root = features_dir(cache_dir)
    listing = root / f"zenodo-{MLSPL_RECORD}.json"
    offline = is_offline(offline)
    files = _read_listing(listing, offline)
    if files is not None:
        paths = _all_in_place(root, _choose(files, match), verify)
        if paths:
            return paths
    if offline and files is None:
        raise UserError(f"offline: the MLSPL features were never downloaded into {root}; download "
                        f"the files of {RECORD_URL} there by hand, or unset HARNESS_OFFLINE")
    if not offline:
        files = _list_online(root, listing)
    paths = []
    for f in _choose(files, match):
        path = fetch_url(f.url, root / Path(f.key).name, Published(md5=f.md5, size=f.size), verify=verify,
                         offline=offline, quiet=quiet)
        _unpack_once(path)
        paths.append(path)
    return paths


def _read_listing(listing, offline):
    """The saved record listing, or None when there is none (or, online, when it is damaged)."""
    if not listing.is_file():
        return None
    try:
        return {k: zenodo.ZenodoFile(**v) for k, v in json.loads(listing.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as e:
        if not offline:
            return None  # replaced by a fresh listing below
        raise UserError(f"{listing} is damaged ({_brief(e)}); delete it and run "
                        "again online, or copy it from a machine that downloaded the features")


def _list_online(root, listing):
    try:
        files = zenodo.list_record(MLSPL_RECORD)
    except SourceError as e:
        raise UserError(f"{e}; check the connection, or download the files of {RECORD_URL} by hand "
                        f"into {root}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_atomically(listing, json.dumps({k: vars(f) for k, f in files.items()}, indent=1))
    except OSError as e:
        raise disk_full(listing, e) or e
    return files


def _choose(files, match):
    chosen = [f for key, f in sorted(files.items()) if match.lower() in key.lower()]
    if not chosen:
        raise UserError(f"Zenodo record {MLSPL_RECORD} has no file whose name contains '{match}' "
                        f"(it holds: {', '.join(sorted(files)) or 'nothing'})")
    return chosen


def _all_in_place(root, chosen, verify):
    """The paths of the chosen files if every one is cached and passes its check, else None."""
    paths = []
    for f in chosen:
        path = root / Path(f.key).name
        if not path.is_file():
            return None
        try:  # offline=True: checks the copy in place (a bad one is moved aside), never downloads
            fetch_url(f.url, path, Published(md5=f.md5, size=f.size), verify=verify, offline=True, quiet=True)
        except UserError:
            return None
        _unpack_once(path)
        paths.append(path)
    return paths


def _unpack_once(path):
    if not path.name.lower().endswith(ARCHIVES):
        return
    marker = path.with_name(path.name + ".unpacked")
    if marker.exists():
        return
    # The "data" filter keeps a tar's members inside the folder (Python 3.11.4+, 3.12+); zips
    # need none: shutil skips absolute and ".." member names itself.
    is_tar = not path.name.lower().endswith(".zip")
    safe = {"filter": "data"} if is_tar and hasattr(tarfile, "data_filter") else {}
    try:
        shutil.unpack_archive(path, path.parent, **safe)
        marker.write_text("unpacked\n")
    except (shutil.ReadError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"cannot unpack {path} ({_brief(e)}); the archive is damaged "
                        "or unsafe: delete it and run again to download it anew")
    except OSError as e:
        raise disk_full(path.parent, e) or e


def _brief(error):
    return f"{type(error).__name__}: {' '.join(str(error).split())[:160]}"
