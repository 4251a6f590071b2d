"""Where files go and how patient the network code is, read from the environment.

Every base URL can be replaced (a mirror, or a server on 127.0.0.1 in the tests).
"""
import os
from dataclasses import dataclass
from pathlib import Path

from harness.inputs import environment
from harness.manifest import DEFAULT_MANIFEST

DEFAULT_HOME = Path.home() / ".cache" / "harness"
GDRIVE_URL = "https://drive.google.com"
ZENODO_API = "https://zenodo.org/api"
COCO_URL = "http://images.cocodataset.org"


def harness_home(cache_dir=None):
    """The cache root: --cache, else $HARNESS_HOME, else ~/.cache/harness."""
    return Path(cache_dir).expanduser() if cache_dir else environment.home(DEFAULT_HOME)


def is_offline(offline=None):
    if offline is not None:
        return bool(offline)
    return environment.flag("HARNESS_OFFLINE")


def lock_file_for(manifest=None):
    """The lock file sits beside the manifest it pins."""
    if os.environ.get("HARNESS_LOCK_FILE"):
        return environment.lock_file_path(os.environ["HARNESS_LOCK_FILE"], named_by="HARNESS_LOCK_FILE")
    return Path(manifest or DEFAULT_MANIFEST).with_name("weights_manifest.lock.yaml")


def base_url(name, default):
    return environment.url(name, default)


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
            connect_timeout=environment.number("HARNESS_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=environment.number("HARNESS_READ_TIMEOUT", cls.read_timeout),
            retries=environment.number("HARNESS_RETRIES", cls.retries),
            backoff=environment.number("HARNESS_BACKOFF", cls.backoff),
        )

    def delay(self, attempt):
        return min(self.backoff * 2 ** attempt, 60.0)

