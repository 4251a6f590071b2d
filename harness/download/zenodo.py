"""Zenodo through its records API: <api>/records/<id> lists each file's key, size, md5 and link."""
from dataclasses import dataclass

from harness.download.errors import SourceError
from harness.download.http import get_json
from harness.download.settings import ZENODO_API, base_url


@dataclass(frozen=True)
class ZenodoFile:
    key: str
    url: str
    size: int | None
    md5: str | None


def list_record(record, patience=None):
    """{key: ZenodoFile} of one published record (HARNESS_ZENODO_API replaces the API's base)."""
    api = base_url("HARNESS_ZENODO_API", ZENODO_API)
    url = f"{api}/records/{record}"
    answer = get_json(url, "Zenodo", f"record {record}", patience)
    if not isinstance(answer, dict):
        raise SourceError("html", f"Zenodo sent something other than a record for record {record} ({url})")
    return {f.key: f for f in (_parse(api, record, e) for e in answer.get("files") or [])}


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
