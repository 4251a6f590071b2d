"""Every HARNESS_* environment variable the harness reads: each read through here and checked, and
all of them checked when a command starts (check_all), so a bad value is one line naming the
variable, the value and what it may be, whether or not this command would have read it (a
HARNESS_RETRIES=lots is refused offline too, not only on the day a download needs it).
"""
import difflib
import logging
import math
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

from harness.errors import UserError

logger = logging.getLogger(__name__)

FLAG_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False, "": False}
TRESNET_BN = ("torch", "auto")  # torch: plain torch batch norm; auto (or unset): inplace_abn's kernel where it runs
NUMBERS = {  # name: (example, whole, positive)
    "HARNESS_CONNECT_TIMEOUT": ("15", False, True),
    "HARNESS_READ_TIMEOUT": ("60", False, True),
    "HARNESS_RETRIES": ("3", True, False),
    "HARNESS_BACKOFF": ("1.0", False, False),
}
URLS = ("HARNESS_GDRIVE_URL", "HARNESS_ZENODO_API", "HARNESS_COCO_URL")
PATHS = ("HARNESS_HOME", "HARNESS_MANIFEST", "HARNESS_LOCK_FILE")
KNOWN = ("HARNESS_OFFLINE", "HARNESS_TRESNET_BN", "HARNESS_GIT_COMMIT", *NUMBERS, *URLS, *PATHS)
MAX_RETRIES = 100
MAX_SECONDS = 24 * 3600.0
GIT_COMMIT = re.compile(r"[0-9a-f]{7,64}")


def _refuse(name, text, allowed):
    raise UserError(f"{name}={text!r:.80} is not {allowed}; set it so, or unset it")


def flag(name):
    """A yes/no variable: 1, true, yes / 0, false, no (any case), unset or empty: no."""
    text = os.environ.get(name, "")
    value = FLAG_VALUES.get(text.strip().lower())
    if value is None:
        _refuse(name, text, "one of 1, true, yes, 0, false, no")
    return value


def tresnet_bn():
    """HARNESS_TRESNET_BN: 'torch' forces plain torch batch norm; 'auto' or unset: the kernel where it runs."""
    text = os.environ.get("HARNESS_TRESNET_BN", "")
    if text.strip().lower() in ("", "auto"):
        return "auto"
    if text.strip().lower() != "torch":
        _refuse("HARNESS_TRESNET_BN", text, "torch (plain torch batch norm) or auto (inplace_abn's kernel where it "
                                            "runs, the default)")
    return "torch"


def number(name, default):
    """The number in `name` (default when unset), bounded: a whole count of retries up to MAX_RETRIES,
    seconds up to a day."""
    example, whole, positive = NUMBERS[name]
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    high = MAX_RETRIES if whole else MAX_SECONDS
    if value is None or not math.isfinite(value) or value < 0 or (positive and value == 0) or value > high:
        kind = "a whole number" if whole else "a number of seconds"
        low = "above 0" if positive else "from 0"
        raise UserError(f"{name}={text!r:.80} is not {kind} {low} up to {high:g}; set it like {name}={example}, "
                        f"or unset it")
    return value


def url(name, default):
    """A base address (a mirror, a test server): http:// or https://, without a trailing slash."""
    text = os.environ.get(name) or default
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in text):
        _refuse(name, text, f"an http:// or https:// address (like {default})")
    return text.rstrip("/")


def git_commit():
    """HARNESS_GIT_COMMIT: the commit a copy without .git was made from (hex), else None."""
    text = os.environ.get("HARNESS_GIT_COMMIT", "").strip()
    if text and not GIT_COMMIT.fullmatch(text.lower()):
        _refuse("HARNESS_GIT_COMMIT", text, "a git commit id (7 to 64 hex digits)")
    return text.lower() or None


def home(default):
    """HARNESS_HOME (else `default`): the cache root, a folder or a path that can become one."""
    text = os.environ.get("HARNESS_HOME")
    if not text:
        return Path(default).expanduser()
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        _refuse("HARNESS_HOME", text, "a folder (it is the cache root; it names a file)")
    return path


def manifest():
    """HARNESS_MANIFEST as a path (None when unset): a regular file."""
    text = os.environ.get("HARNESS_MANIFEST")
    if not text:
        return None
    path = Path(text).expanduser()
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UserError(f"HARNESS_MANIFEST={text!r:.80}: {e.strerror or e}; set it to a weights_manifest.yaml, "
                        f"or unset it") from None
    if not stat.S_ISREG(mode):
        _refuse("HARNESS_MANIFEST", text, "a manifest file (it names a folder, device or FIFO)")
    return path


def check_all():
    """Check every HARNESS_* variable that is set (one line for the first bad one); warn of a
    HARNESS_* name the harness does not read (a typo would be silently ignored)."""
    flag("HARNESS_OFFLINE")
    tresnet_bn()
    git_commit()
    for name in NUMBERS:
        number(name, None)
    for name in URLS:
        if os.environ.get(name):
            url(name, "https://example.org")
    home(Path.home())
    manifest()
    if os.environ.get("HARNESS_LOCK_FILE"):
        lock_file_path(os.environ["HARNESS_LOCK_FILE"], named_by="HARNESS_LOCK_FILE")
    for name in os.environ:
        if name.startswith("HARNESS_") and name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]}?" if close else f" (it reads {', '.join(KNOWN)})"
            logger.warning(f"{name} is set but the harness reads no such variable{hint}")


LOCK_FIX = "set HARNESS_LOCK_FILE to a file (or a new name) in an existing folder, or unset it"


def lock_file_path(path, named_by=None, *, writing=True):
    """The path a lock file is read from and written to: a regular file, or a new name in an existing
    folder; a link is followed (the file it names is the lock). Anything else is refused before a byte
    is written: the atomic rename of a write would replace a device (/dev/null, as root), a FIFO or a
    socket with a regular file. `named_by`: the variable that named it, for the message; writing=False:
    a missing file is fine wherever it would be (nothing is read)."""
    path = Path(path)
    where = f"{named_by}={path}" if named_by else f"the lock file {path}"
    fix = LOCK_FIX if named_by else f"remove it, or {LOCK_FIX}"
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UserError(f"{where} is a link to nothing ({os.readlink(path)}); {fix}") from None
        if writing and not path.parent.is_dir():
            raise UserError(f"cannot write the lock file {path}: the folder {path.parent} does not exist; "
                            "create it, or set HARNESS_LOCK_FILE to a file in an existing folder")
        return path
    except OSError as e:
        raise UserError(f"{where}: cannot be read ({e.strerror or e}); {fix}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{where} is a folder; name a file in it, e.g. {path / 'weights_manifest.lock.yaml'}, or "
                        f"{LOCK_FIX}")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{where} is not a regular file (a device, FIFO or socket), and writing the lock would "
                        f"replace it; {fix}")
    return Path(os.path.realpath(path))
