"""A file in a Seafile shared folder (the authors' Tsinghua cloud), found by listing the folder.

The share's folder is listed through Seafile's share-link API (`<server>/api/v2.1/share-links/<share>/
dirents/?path=<folder>`); the one file whose name contains `match` (any case) is downloaded from
`<server>/d/<share>/files/?p=<folder>/<name>&dl=1`. No file, or several, is a failure of this source
naming what the folder holds: the file names of the authors' `Q2L-logs` folder are not known here.
"""
import time
from urllib.parse import quote

import requests

from harness.download.errors import SourceError
from harness.download.http import network_reason
from harness.download.settings import Patience


def list_folder(server, share, folder, patience=None):
    """The file names in one folder of a share."""
    patience = patience or Patience.from_env()
    url = f"{server.rstrip('/')}/api/v2.1/share-links/{share}/dirents/?path={quote(folder)}"
    last = None
    for attempt in range(patience.retries + 1):
        if attempt:
            time.sleep(patience.delay(attempt - 1))
        try:
            r = requests.get(url, timeout=(patience.connect_timeout, patience.read_timeout),
                             headers={"Accept": "application/json"})
        except (requests.ConnectionError, requests.Timeout) as e:
            last = e
            continue
        if r.status_code >= 500 or r.status_code == 429:
            last = RuntimeError(f"HTTP {r.status_code}")
            continue
        if r.status_code != 200:
            raise SourceError("http", f"the Seafile share answered HTTP {r.status_code} for {folder} ({url})")
        try:
            entries = r.json().get("dirent_list") or []
        except (ValueError, AttributeError):
            raise SourceError("html", f"the Seafile share sent something other than a folder listing ({url})")
        return [e["file_name"] for e in entries if isinstance(e, dict) and not e.get("is_dir") and e.get("file_name")]
    raise SourceError("network", f"cannot reach the Seafile share ({network_reason(last)}, "
                                 f"{patience.retries + 1} attempts)")


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
