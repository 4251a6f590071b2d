"""What a long step is doing, said as it happens: every step that can take more than a few seconds
names itself, and a step with a count draws a bar with its ETA.

    step(what)        a context manager: "what ..." once it has run a second (a quick step, or a quick
                      failure, says nothing) and, past a second, "what: done in 12 s" as it ends
    bar(total, desc)  a tqdm bar on stderr with its ETA (a silent one under --no-progress)
    Ticker(bars)      redraws bars every second from a thread, so their elapsed time moves while
                      one long call runs (a batch that holds every image, a model being built)
    Eta(total)        "3/10 done, about 2 min 10 s left" for steps that report in lines rather than a bar
    set_bars(on)      the CLI's --no-progress / --quiet: no bar anywhere in this process

    say(line)         one progress line

Lines go through this module's logger at INFO (the CLI shows them on stderr beside the bars, so a
command's stdout holds its result alone, e.g. `predict --format json`; --quiet hides them); bars go
to stderr. Every duration reads `clock`, which a test may replace with a fake one.
"""
import logging
import sys
import threading
import time
from contextlib import contextmanager

logger = logging.getLogger(__name__)

clock = time.monotonic
SAY_AFTER_S = 1.0  # a step says what it is doing once it has run this long; 0: at once (tests)
_bars = {"enabled": True}


def set_bars(enabled: bool) -> None:
    """Whether bars are drawn in this process (the CLI turns them off for --no-progress and --quiet)."""
    _bars["enabled"] = bool(enabled)


def bars_enabled() -> bool:
    return _bars["enabled"]


def duration(seconds: float) -> str:
    """'0.4 s', '12 s', '3 min 05 s', '2 h 07 min'."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def say(line: str) -> None:
    logger.info(line)


@contextmanager
def step(what: str):
    """Say `what` once it has run SAY_AFTER_S and, when it took a second or more, how long (not when
    it fails: the error says why, alone when it came quickly)."""
    start = clock()
    timer = threading.Timer(SAY_AFTER_S, say, [f"{what} ..."]) if SAY_AFTER_S > 0 else None
    if timer is None:
        say(f"{what} ...")
    else:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
    took = clock() - start
    if took >= 1.0:
        say(f"{what}: done in {duration(took)}")


def bar(total: int | None, desc: str, *, unit: str = "img", initial: int = 0, enabled: bool = True,
        position: int = 0, leave: bool = True, iterable=None, **options):
    """A tqdm bar on stderr (its rate and ETA tqdm's) over `iterable` or counted by update(); silent
    when `enabled` is false or bars are off. `options` go to tqdm as they are."""
    from tqdm import tqdm  # lazy: the torch-free commands (report, compare) load this module

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, position=position,
                disable=not (enabled and _bars["enabled"]), leave=leave, file=sys.stderr, **options)


class Ticker:
    """Redraws `bars` every `interval` seconds while inside, from a daemon thread: a bar updated only
    after each batch would otherwise sit still, its clock too, while one long batch runs."""

    def __init__(self, bars, interval: float = 1.0):
        self.bars = [b for b in bars if not getattr(b, "disable", True)]
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.bars:
            self._thread = threading.Thread(target=self._run, name="progress-ticker", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            for b in self.bars:
                if not b.disable:  # closed bars are disabled
                    b.refresh()

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False


class Eta:
    """Progress said in lines: how much of `total` is done and, at the pace since the first count,
    about how long the rest takes."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.first, self.start = total, done, clock()

    def left_s(self, done: int) -> float | None:
        counted = done - self.first
        if counted <= 0:
            return None
        return (clock() - self.start) / counted * (self.total - done)

    def line(self, done: int) -> str:
        left = self.left_s(done)
        return f"{done}/{self.total} done" + ("" if left is None else f", about {duration(left)} left")
