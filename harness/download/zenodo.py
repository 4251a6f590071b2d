"""Zenodo through its records API: <api>/records/<id> lists each file's key, size, md5 and link."""
import time
from dataclasses import dataclass

import requests

from harness.download.errors import SourceError
from harness.download.http import network_reason
from harness.download.settings import ZENODO_API, Patience, base_url


@dataclass(frozen=True)
class ZenodoFile:
    key: str
    url: str
    size: int | None
    md5: str | None


def list_record(record, patience=None):
    """{key: ZenodoFile} of one published record (HARNESS_ZENODO_API replaces the API's base)."""
    patience = patience or Patience.from_env()
    api = base_url("HARNESS_ZENODO_API", ZENODO_API)
    url = f"{api}/records/{record}"
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
            raise SourceError("http", f"Zenodo answered HTTP {r.status_code} for record {record} ({url})")
        try:
            entries = r.json().get("files") or []
        except ValueError:
            raise SourceError("html", f"Zenodo sent something other than JSON for record {record} ({url})")
        return {f.key: f for f in (_parse(api, record, e) for e in entries)}
    raise SourceError("network", f"cannot reach Zenodo ({network_reason(last)}, {patience.retries + 1} attempts)")


def _parse(api, record, entry):
    key = entry.get("key") or entry.get("filename")
    links = entry.get("links") or {}
    url = links.get("content") or links.get("self") or links.get("download") \
        or f"{api}/records/{record}/files/{key}/content"
    checksum = entry.get("checksum") or ""
    md5 = checksum.split(":", 1)[1] if checksum.startswith("md5:") else (checksum or None)
    return ZenodoFile(key=key, url=url, size=entry.get("size", entry.get("filesize")), md5=md5)


def resolve(record, key, patience=None):
    files = list_record(record, patience)
    if key not in files:
        raise SourceError("http", f"Zenodo record {record} has no file '{key}' "
                                  f"(it holds: {', '.join(sorted(files)) or 'nothing'})")
    return files[key]
