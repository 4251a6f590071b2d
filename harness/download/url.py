"""fetch_url: one file from one URL into a given place, verified against published checksums."""
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from harness.download import http
from harness.download.errors import SourceError
from harness.download.lock import exclusive
from harness.download.settings import Patience, is_offline
from harness.download.sources import check_size_md5
from harness.download.verify import move_aside, read_record, unchanged_since, write_record
from harness.errors import UserError
from harness.files import file_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """What a source publishes of a file, to check a download against (None: not published)."""
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


def fetch_url(url, dest, published=Published(), *, verify=False, offline=None, quiet=False, patience=None):
    """Return `dest`, downloading `url` there first unless a good copy is already in place.

    The body collects in <dest>.part (resumed on the next call after an interruption), is
    checked against the given size, md5 and sha256, then renamed into place. A copy already
    in place is checked by size (and fully with verify=True). A bad file is moved aside.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dest, quiet=quiet):  # one writer per file: a second run waits, then finds it in place
        if dest.is_file() and _good_in_place(dest, published, verify):
            return dest
        if is_offline(offline):
            raise UserError(f"offline: {dest} is missing; place it there by hand (from {url}), "
                            "or unset HARNESS_OFFLINE")
        return _download(url, dest, published, quiet, patience)


def _download(url, dest, published, quiet, patience):
    sha256 = published.sha256
    part = dest.with_name(dest.name + ".part")
    try:
        http.download(url, part, patience=patience or Patience.from_env(), desc=dest.name, quiet=quiet)
        check_size_md5(part, published.size, published.md5, url)
        got = file_digest(part)
        if sha256 and got != sha256:
            raise SourceError("mismatch", f"{dest.name} has sha256 {got}, not {sha256}")
    except SourceError as e:
        if e.kind == "mismatch":
            raise UserError(f"{e}; the download was moved to {move_aside(part, name_like=dest)}; "
                            "delete it and try again, or fetch the file by hand")
        hint = "check the connection, or " if e.kind == "network" else ""
        raise UserError(f"{e}; {hint}download {url} by hand to {dest}")
    os.replace(part, dest)
    write_record(dest, got, url)
    return dest


def _good_in_place(dest, published, verify):
    sha256, md5, size = published.sha256, published.md5, published.size
    record = read_record(dest) or {}
    actual = dest.stat().st_size
    if size is None or actual == size:
        if not verify and unchanged_since(dest, record) and sha256 in (None, record.get("sha256")):
            return True
        got = file_digest(dest)
        if got == (sha256 or record.get("sha256") or got) and (md5 is None or file_digest(dest, "md5") == md5):
            if record.get("sha256") != got:
                write_record(dest, got, record.get("source", "found in place"))
            return True
    moved = move_aside(dest)
    logger.warning(f"warning: {dest} failed verification; moved it to {moved}")
    return False
