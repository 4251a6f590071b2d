"""Why one source failed. The caller tries the next source, then tells the user all reasons in one line."""
import errno

from harness.errors import UserError


class SourceError(Exception):
    """One source could not deliver the file. kind: network, quota, html, http, mismatch."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def disk_full(path, error):
    """An OSError while writing: disk full is the user's to fix, anything else stays a crash."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"disk full while writing {path}; free some space or point "
                         "HARNESS_HOME (or --cache) at a larger disk")
    return None
