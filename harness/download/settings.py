"""Where files go and how patient the network code is, read from the environment.

Every base URL can be replaced (a mirror, or a server on 127.0.0.1 in the tests).
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.manifest import DEFAULT_MANIFEST

DEFAULT_HOME = Path.home() / ".cache" / "harness"
GDRIVE_URL = "https://drive.google.com"
ZENODO_API = "https://zenodo.org/api"
COCO_URL = "http://images.cocodataset.org"


def harness_home(cache_dir=None):
    """The cache root: --cache, else $HARNESS_HOME, else ~/.cache/harness."""
    return Path(cache_dir or os.environ.get("HARNESS_HOME") or DEFAULT_HOME).expanduser()


def is_offline(offline=None):
    if offline is not None:
        return bool(offline)
    return os.environ.get("HARNESS_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def lock_file_for(manifest=None):
    """The lock file sits beside the manifest it pins."""
    if os.environ.get("HARNESS_LOCK_FILE"):
        return Path(os.environ["HARNESS_LOCK_FILE"])
    return Path(manifest or DEFAULT_MANIFEST).with_name("weights_manifest.lock.yaml")


def base_url(name, default):
    return os.environ.get(name, default).rstrip("/")


@dataclass(frozen=True)
class Patience:
    """Timeouts and retries of one download; tests shorten them through the environment."""
    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # seconds without a byte before giving up on a connection
    retries: int = 3  # extra attempts after the first, each resuming where the last stopped
    backoff: float = 1.0  # seconds before the first retry, doubled each time, capped at 60

    @classmethod
    def from_env(cls):
        return cls(
            connect_timeout=_number("HARNESS_CONNECT_TIMEOUT", cls.connect_timeout, "15", positive=True),
            read_timeout=_number("HARNESS_READ_TIMEOUT", cls.read_timeout, "60", positive=True),
            retries=_number("HARNESS_RETRIES", cls.retries, "3", whole=True),
            backoff=_number("HARNESS_BACKOFF", cls.backoff, "1.0"),
        )

    def delay(self, attempt):
        return min(self.backoff * 2 ** attempt, 60.0)


def _number(name, default, example, *, whole=False, positive=False):
    """The number in environment variable `name` (default when unset); a UserError names a bad one."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "a whole number" if whole else "a number of seconds"
        bound = "above 0" if positive else "0 or more"
        raise UserError(f"{name}={text!r} is not {kind} {bound}; set it like {name}={example}, or unset it")
    return value
