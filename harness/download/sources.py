"""One manifest source -> a complete file on disk, not yet verified (the caller verifies)."""
import hashlib
from pathlib import Path

from harness.download import gdrive, http, seafile, zenodo
from harness.download.errors import SourceError
from harness.files import file_digest


def describe(source):
    """A short name for messages: which place a file came (or failed to come) from."""
    kind = source["type"]
    if kind == "gdrive_folder":
        return f"Google Drive folder {source['folder_id']} ({source['path']})"
    if kind == "gdrive_file":
        return f"Google Drive file {source['file_id']}"
    if kind == "zenodo":
        return f"Zenodo record {source['record']} ({source['key']})"
    if kind == "seafile_folder":
        return f"Seafile share {source['share']} ({source['folder']}, a file named like {source['match']})"
    return http.host_of(source["url"])


def as_text(source):
    """The source as one string for the lock file and the cache record."""
    kind = source["type"]
    if kind == "gdrive_folder":
        return f"gdrive_folder:{source['folder_id']}/{source['path']}"
    if kind == "gdrive_file":
        return f"gdrive_file:{source['file_id']}"
    if kind == "zenodo":
        return f"zenodo:{source['record']}/{source['key']}"
    if kind == "seafile_folder":
        return f"seafile:{source['server']}/d/{source['share']}{source['folder']}*{source['match']}*"
    return f"http:{source['url']}"


def partial_path(dest, source):
    """Where this source's bytes collect: one file per source, so a resume never mixes two servers."""
    tag = hashlib.sha1(as_text(source).encode()).hexdigest()[:8]
    return Path(dest).with_name(f"{Path(dest).name}.part-{tag}")


def download(source, dest, *, patience=None, quiet=False):
    """Fetch `source` into its partial file beside `dest` and return that file's path."""
    part = partial_path(dest, source)
    kind = source["type"]
    if kind in ("gdrive_folder", "gdrive_file"):
        file_id = source.get("file_id") or gdrive.resolve_folder_path(source["folder_id"], source["path"], patience)
        gdrive.download_file(file_id, part, patience=patience, quiet=quiet)
    elif kind == "zenodo":
        entry = zenodo.resolve(source["record"], source["key"], patience)
        http.download(entry.url, part, patience=patience, desc=Path(dest).name, quiet=quiet)
        check_size_md5(part, entry.size, entry.md5, f"Zenodo record {source['record']}")
    elif kind == "seafile_folder":
        url = seafile.resolve(source, patience)
        http.download(url, part, patience=patience, desc=Path(dest).name, quiet=quiet, expect_binary=False)
    else:
        http.download(source["url"], part, patience=patience, desc=Path(dest).name, quiet=quiet)
    return part


def check_size_md5(path, size, md5, where):
    """Compare with the size and md5 a server published; raise SourceError('mismatch') when they differ."""
    actual = Path(path).stat().st_size
    if size is not None and actual != size:
        raise SourceError("mismatch", f"{Path(path).name} has {actual} bytes but {where} lists {size}")
    if md5 and file_digest(path, "md5") != md5:
        raise SourceError("mismatch", f"{Path(path).name} does not match the md5 {md5} listed by {where}")
