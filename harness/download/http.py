"""A resumable HTTP download into a partial file: Range requests, bounded retries, timeouts, a progress bar."""
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from tqdm import tqdm

from harness import __version__
from harness.download.errors import SourceError, disk_full
from harness.download.settings import Patience
from harness.progress import bars_enabled

CHUNK = 1 << 16  # small: a dropped connection loses at most this much


@dataclass(frozen=True)
class _Transfer:
    """One download: from `url` into the partial file `part`, under a progress bar named `desc`."""
    url: str
    part: Path
    desc: str
    expect_binary: bool
    quiet: bool


class _Retry(Exception):
    """A failure worth another attempt (dropped connection, 5xx); the partial file is kept."""


def host_of(url):
    return urlsplit(url).netloc or url


def network_reason(error):
    text = str(error)
    if isinstance(error, requests.Timeout) or "timed out" in text.lower():
        return "timed out"
    if "NameResolution" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "DNS lookup failed"
    if "refused" in text.lower():
        return "connection refused"
    return text.splitlines()[0][:160] if text else type(error).__name__


def get_json(url, who, what, patience=None):
    """The JSON answer of an API call (a listing: small) from `who` ("Zenodo") about `what` ("record 1"),
    with a download's bounded retries on a dropped connection, 5xx or 429; anything else is a
    SourceError naming who answered what."""
    patience = patience or Patience.from_env()
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
            raise SourceError("http", f"{who} answered HTTP {r.status_code} for {what} ({url})")
        try:
            return r.json()
        except ValueError:
            raise SourceError("html", f"{who} sent something other than JSON for {what} ({url})") from None
    raise SourceError("network", f"cannot reach {who} ({network_reason(last)}, {patience.retries + 1} attempts)")


def looks_like_html(response, first_bytes):
    if response.headers.get("Content-Type", "").lower().startswith("text/html"):
        return True
    head = first_bytes.lstrip()[:15].lower()
    return head.startswith(b"<!doctype html") or head.startswith(b"<html")


def download(url, part, *, patience=None, desc=None, expect_binary=True, quiet=False):
    """Fill `part` with the body of `url`, resuming from its current size.

    Returns when the body is complete; raises SourceError when this source cannot deliver
    (kind "mismatch" for a body longer than its declared size: the caller moves `part` aside).
    The caller keeps other processes off `part` (download.lock.exclusive).
    """
    patience = patience or Patience.from_env()
    part = Path(part)
    part.parent.mkdir(parents=True, exist_ok=True)
    last, failures = None, 0
    transfer = _Transfer(url, part, desc or part.name, expect_binary, quiet)
    with requests.Session() as session:
        session.headers.update({"User-Agent": f"harness/{__version__}", "Accept-Encoding": "identity"})
        while failures <= patience.retries:
            if failures:
                time.sleep(patience.delay(failures - 1))
            before = part.stat().st_size if part.exists() else 0
            try:
                _attempt(session, transfer, patience)
                return
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError, _Retry) as e:
                last = e
                # An attempt that moved the file forward does not count: a long download
                # over a flaky line goes on as long as it progresses.
                grew = part.exists() and part.stat().st_size > before
                failures = 1 if grew else failures + 1
            except requests.RequestException as e:  # a malformed URL: no point retrying
                raise SourceError("http", f"cannot download {url}: {network_reason(e)}")
    raise SourceError("network", f"cannot download from {host_of(url)} "
                                 f"({network_reason(last)}, {patience.retries + 1} attempts)")


def _total_from_content_range(value):
    m = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _attempt(session, transfer, patience):
    url, part = transfer.url, transfer.part
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = (patience.connect_timeout, patience.read_timeout)
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and offset:
            _, total = _total_from_content_range(r.headers.get("Content-Range"))
            if total == offset:
                return  # the partial file was already complete
            part.unlink()
            raise _Retry("the server refused the resume range; starting again")
        if r.status_code >= 500 or r.status_code == 429:
            raise _Retry(f"HTTP {r.status_code} from {host_of(url)}")
        if r.status_code >= 400:
            raise SourceError("http", f"{host_of(url)} answered HTTP {r.status_code} {r.reason} for {url}")
        start, total = _total_from_content_range(r.headers.get("Content-Range"))
        if r.status_code == 206 and start != (offset if offset else 0):
            part.unlink(missing_ok=True)
            raise _Retry(f"the server sent bytes from {start}, not from {offset}; starting again")
        if r.status_code == 206 and offset:
            mode = "ab"
        else:  # a server that ignores Range answers 200 with the whole body: start over
            offset, mode = 0, "wb"
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        _write_body(r, transfer, mode, offset, total)
    size = part.stat().st_size
    if total is not None and size > total:  # e.g. another writer appended to the same partial file
        raise SourceError("mismatch", f"{part.name} has {size} bytes, more than the {total} that "
                                      f"{host_of(url)} declared: refused")
    if total is not None and size < total:
        raise _Retry(f"connection dropped at {size} of {total} bytes")


def _write_body(r, transfer, mode, offset, total):
    url, part = transfer.url, transfer.part
    chunks = r.iter_content(CHUNK)
    first = next(chunks, b"")
    if transfer.expect_binary and offset == 0 and looks_like_html(r, first):
        raise SourceError("html", f"{host_of(url)} sent an HTML page instead of the file "
                                  f"(an error, login or quota page): {url}")
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
               desc=transfer.desc, disable=True if transfer.quiet or not bars_enabled() else None, file=sys.stderr,
               mininterval=0.5)
    size = offset
    try:
        with open(part, mode) as f:
            for chunk in _chain(first, chunks):
                size += len(chunk)
                if total is not None and size > total:
                    raise SourceError("mismatch", f"{host_of(url)} sent more than the {total} bytes it "
                                                  f"declared for {url}: refused")
                f.write(chunk)
                bar.update(len(chunk))
    except OSError as e:
        if isinstance(e, requests.RequestException):
            raise
        raise disk_full(part, e) or e
    finally:
        bar.close()


def _chain(first, rest):
    if first:
        yield first
    yield from rest
