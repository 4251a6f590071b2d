"""A file in a Seafile shared folder (the authors' Tsinghua cloud), found by listing the folder.

The share's folder is listed through Seafile's share-link API (`<server>/api/v2.1/share-links/<share>/
dirents/?path=<folder>`); the one file whose name contains `match` (any case) is downloaded from
`<server>/d/<share>/files/?p=<folder>/<name>&dl=1`. No file, or several, is a failure of this source
naming what the folder holds: the file names of the authors' `Q2L-logs` folder are not known here.
"""
from urllib.parse import quote

from harness.download.errors import SourceError
from harness.download.http import get_json


def list_folder(server, share, folder, patience=None):
    """The file names in one folder of a share."""
    url = f"{server.rstrip('/')}/api/v2.1/share-links/{share}/dirents/?path={quote(folder)}"
    answer = get_json(url, "the Seafile share", folder, patience)
    if not isinstance(answer, dict):
        raise SourceError("html", f"the Seafile share sent something other than a folder listing ({url})")
    entries = answer.get("dirent_list") or []
    return [e["file_name"] for e in entries if isinstance(e, dict) and not e.get("is_dir") and e.get("file_name")]


def resolve(source, patience=None):
    """The download URL of the one file of `source`'s folder whose name contains its `match`."""
    server, share, folder, match = source["server"], source["share"], source["folder"], source["match"]
    names = list_folder(server, share, folder, patience)
    hits = [n for n in names if match.lower() in n.lower()]
    if len(hits) != 1:
        found = "none" if not hits else f"{len(hits)} ({', '.join(hits)})"
        raise SourceError("http", f"the Seafile folder {folder} has {found} file named like '{match}' "
                                  f"(it holds: {', '.join(names) or 'nothing'})")
    return f"{server.rstrip('/')}/d/{share}/files/?p={quote(folder.rstrip('/') + '/' + hits[0])}&dl=1"
