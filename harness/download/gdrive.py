"""Google Drive through gdown: a folder path resolved to a file id, then the file itself.

gdown handles Drive's virus-scan confirmation page for big files, resuming and retries.
Drive's hosts are fixed inside gdown, so a replacement base URL (HARNESS_GDRIVE_URL: a
mirror, or the tests' server on 127.0.0.1) is applied by mounting a requests adapter on
the sessions gdown opens, which sends every request for a Google host to that base.
"""
import contextlib
import glob
import importlib
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from harness.download.errors import SourceError, disk_full
from harness.download.http import network_reason
from harness.download.settings import GDRIVE_URL, Patience, base_url

logger = logging.getLogger(__name__)

GOOGLE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
QUOTA_TEXT = "Too many users have viewed or downloaded this file recently"
RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_listings = {}  # (base, folder id) -> {path inside the folder: file id}


class _Rebase(HTTPAdapter):
    """Sends a request for a Google host to another base URL, keeping path and query."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        request.url = self.base + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().send(request, **kwargs)


@contextlib.contextmanager
def _gdown_at(base):
    """Within this block, the sessions gdown opens talk to `base` instead of Google."""
    if base == GDRIVE_URL:
        yield
        return
    modules = [importlib.import_module(m) for m in ("gdown.download", "gdown.download_folder")]
    original = modules[0]._get_session

    def get_session(*args, **kwargs):
        out = original(*args, **kwargs)
        session = out[0] if isinstance(out, tuple) else out
        for host in GOOGLE_HOSTS:
            session.mount(f"https://{host}/", _Rebase(base))
        return out

    for m in modules:
        m._get_session = get_session
    try:
        yield
    finally:
        for m in modules:
            m._get_session = original


def resolve_folder_path(folder_id, path, patience=None):
    """The Drive file id of `path` (e.g. Q2L-R101-448/checkpoint.pkl) inside a shared folder."""
    import gdown  # lazy: every command loads download/, and only a Drive download needs gdown

    patience = patience or Patience.from_env()
    base = base_url("HARNESS_GDRIVE_URL", GDRIVE_URL)
    key = (base, folder_id)
    if key not in _listings:
        last = None
        for attempt in range(patience.retries + 1):
            if attempt:
                time.sleep(patience.delay(attempt - 1))
            try:
                with _gdown_at(base):
                    files = gdown.download_folder(
                        id=folder_id, skip_download=True, quiet=True, use_cookies=base == GDRIVE_URL,
                        timeout=(patience.connect_timeout, patience.read_timeout))
                _listings[key] = {f.path.replace("\\", "/"): f.id for f in files}
                break
            except RETRYABLE as e:
                last = e
            except (gdown.exceptions.DownloadError, requests.RequestException) as e:
                # e.g. a redirect loop or a refused page: the next source may still work
                raise SourceError("http", f"cannot list Google Drive folder {folder_id}: {network_reason(e)}")
        else:
            raise SourceError("network", f"cannot reach Google Drive ({network_reason(last)}, "
                                         f"{patience.retries + 1} attempts)")
    listing = _listings[key]
    if path not in listing:
        raise SourceError("http", f"Google Drive folder {folder_id} has no file {path} "
                                  f"(it holds {len(listing)} files)")
    return listing[path]


def download_file(file_id, out, *, patience=None, quiet=False):
    """Download one Drive file to `out` (gdown keeps and resumes its own partial file beside it)."""
    import gdown  # lazy: every command loads download/, and only a Drive download needs gdown

    patience = patience or Patience.from_env()
    out = Path(out)
    try:
        try:
            _gdown_file(file_id, out, patience, quiet)
        except gdown.exceptions.DownloadError as e:
            if isinstance(e, gdown.exceptions.FileURLRetrievalError) or _dropped(e):
                raise
            # gdown will not resume its partial file (the file changed on Drive, the server
            # ignored the range, or several partials lie there): once more from the start.
            if not quiet:
                logger.warning(f"Google Drive file {file_id}: {_first_line(e)}; starting it again")
            for partial in gdown_partials(out):
                partial.unlink(missing_ok=True)
            _gdown_file(file_id, out, patience, quiet)
    except gdown.exceptions.FileURLRetrievalError as e:
        if QUOTA_TEXT.lower() in " ".join(str(e).split()).lower():
            raise SourceError("quota", f"Google Drive refuses file {file_id} for now: '{QUOTA_TEXT}' "
                                       "(a download quota that resets within about 24 hours)")
        raise SourceError("http", f"Google Drive did not give file {file_id} "
                                  "(removed, no longer shared, or the page changed)")
    except requests.HTTPError as e:
        raise SourceError("http", f"Google Drive answered HTTP {e.response.status_code} for file {file_id}")
    except RETRYABLE as e:
        raise SourceError("network", f"cannot download from Google Drive ({network_reason(e)})")
    except requests.RequestException as e:  # before OSError, which it subclasses: a redirect loop, a bad URL
        raise SourceError("http", f"cannot download file {file_id} from Google Drive: {network_reason(e)}")
    except gdown.exceptions.DownloadError as e:
        if _dropped(e):
            raise SourceError("network", f"cannot download from Google Drive ({network_reason(e.__cause__ or e)})")
        raise SourceError("http", f"Google Drive did not send file {file_id} as expected ({_first_line(e)})")
    except OSError as e:
        raise disk_full(out, e) or e
    with open(out, "rb") as f:
        head = f.read(64).lstrip().lower()
    if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
        out.unlink()
        raise SourceError("html", f"Google Drive sent an HTML page instead of file {file_id}")


def _gdown_file(file_id, out, patience, quiet):
    import gdown  # lazy: every command loads download/, and only a Drive download needs gdown

    base = base_url("HARNESS_GDRIVE_URL", GDRIVE_URL)
    with _gdown_at(base):
        gdown.download(id=file_id, output=str(out), quiet=quiet, resume=True,
                       retries=patience.retries, use_cookies=base == GDRIVE_URL,
                       timeout=(patience.connect_timeout, patience.read_timeout))


def gdown_partials(out):
    """gdown's partial files for `out`: <name><8 random characters>.part beside it."""
    out = Path(out)
    return list(out.parent.glob(f"{glob.escape(out.name)}????????.part"))


def _dropped(error):
    """A gdown DownloadError caused by the connection (worth the network label), not by a refusal."""
    return (isinstance(error.__cause__, requests.RequestException)
            or str(error).startswith("Download is incomplete"))


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
