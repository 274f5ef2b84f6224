"""Where a command's wall time goes: ``batchlab --profile COMMAND ...``.

Code marks its phases with ``with phase("compilation"):``; the totals are kept per process
and printed at the end of the command. Imports are timed by wrapping ``__import__`` (only
the outermost import of a chain counts, so nothing is counted twice), and the time before
the command started (interpreter start-up and the CLI's own imports) is read from the
process start time in ``/proc``. Phases that run in other threads (compilation ahead of
training, cohorts trained side by side) overlap the main thread's and each other; the table
lists them apart, as CPU-seconds of those threads, instead of adding them up.
Off unless ``enable()`` was called: ``phase`` then costs one attribute check.
"""

from __future__ import annotations

import builtins
import functools
import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)

_enabled = False
_started = time.perf_counter()
_totals: dict[str, float] = defaultdict(float)
_counts: dict[str, int] = defaultdict(int)
_background: set[str] = set()
_lock = threading.Lock()
_local = threading.local()

ORDER = ("start-up", "imports", "data", "tracing", "compilation", "training", "store", "analysis", "figures")


def enabled() -> bool:
    return _enabled


def _process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), or None where unknown."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def enable() -> None:
    """Start profiling this process (idempotent)."""
    global _enabled, _started
    if _enabled:
        return
    _enabled = True
    age = _process_age()
    now = time.perf_counter()
    if age is not None:
        _add_time("start-up", age, False)
        _counts["start-up"] += 1
        _started = now - age
    else:
        _started = now
    original = builtins.__import__

    def timed_import(*args, **kwargs):
        if getattr(_local, "importing", False):
            return original(*args, **kwargs)
        _local.importing = True
        try:
            with phase("imports"):
                return original(*args, **kwargs)
        finally:
            _local.importing = False

    builtins.__import__ = timed_import


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the body as phase ``name``. Phases nest exclusively: time spent in an inner phase
    (an import inside training, say) counts for the inner one only. Phases of a thread other
    than the main one are marked as background."""
    if not _enabled:
        yield
        return
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    background = threading.current_thread() is not threading.main_thread()
    if background:
        name = f"{name} (threads)"
    now = time.perf_counter()
    if stack:  # pause the enclosing phase
        outer = stack[-1]
        _add_time(outer[0], now - outer[1], background)
    stack.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        _add_time(name, now - stack.pop()[1], background)
        with _lock:
            _counts[name] += 1
        if stack:
            stack[-1][1] = now  # resume the enclosing phase


def timed(name: str) -> Callable[[F], F]:
    """Decorator: every call of the function counts as phase ``name``."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap


def _add_time(name: str, seconds: float, background: bool) -> None:
    with _lock:
        _totals[name] += seconds
        if background:
            _background.add(name)


def table() -> str:
    """The phases, their seconds and share of the wall time so far, as aligned text lines."""
    wall = time.perf_counter() - _started
    names = sorted(_totals, key=lambda n: (n in _background, ORDER.index(n.split(" (")[0])
                                           if n.split(" (")[0] in ORDER else len(ORDER), n))
    foreground = sum(_totals[n] for n in names if n not in _background)
    width = max(len(n) for n in names + ["phase", "other"]) + 2  # the names aligned, whatever their length
    lines = [f"{'phase':<{width}}{'seconds':>9}{'share':>8}{'count':>7}"]
    apart = False
    for name in names:
        if name in _background and not apart:
            lines.append("in other threads, overlapping the phases above:")
            apart = True
        seconds = _totals[name]
        lines.append(f"{name:<{width}}{seconds:>9.2f}{seconds / wall:>8.0%}{_counts[name]:>7}")
    lines.append(f"{'other':<{width}}{max(wall - foreground, 0.0):>9.2f}{max(wall - foreground, 0.0) / wall:>8.0%}")
    lines.append(f"{'wall':<{width}}{wall:>9.2f}")
    return "\n".join(lines)
