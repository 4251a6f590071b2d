"""Peak resident memory (RSS) of this process, from the standard library only.

On Linux the kernel's high-water mark (VmHWM) can be reset by writing 5 to /proc/self/clear_refs,
so a span gets its own peak. Elsewhere getrusage gives the peak over the process's whole life,
which is said in the note.
"""
import resource
import sys
from pathlib import Path

MIB = 1024 * 1024


def _status_kib(field):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark for this process; False when this OS cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def current_rss_mib():
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else None


def peak_rss_mib(was_reset):
    """(peak RSS in MiB, note): since the last reset when `was_reset`, else over the process life."""
    if was_reset:
        kib = _status_kib("VmHWM")
        if kib is not None:
            return kib / 1024, "VmHWM since the start of the measured span"
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return maxrss * per_unit / MIB, "ru_maxrss: peak over the whole process life (could not reset)"
