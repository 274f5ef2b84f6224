"""Ctrl-C (SIGINT) and SIGTERM in the ``batchlab`` command: stop at a point that can stop.

Python's own SIGINT handler raises ``KeyboardInterrupt`` in whatever Python code the main
thread runs next. In a command that imports and drives JAX, that was often code that cannot
take it (measured on this machine, Ctrl-C in the first 0.4-1.2 s of ``train``):

- a garbage-collection callback (JAX's ``_xla_gc_callback``): Python prints "Exception ignored"
  and drops the exception, and the command trained to the end and exited 0 (26 of 26 tries);
- a Python function that JAX's C++ calls back (nanobind): the exception crosses C++ and the
  process aborts ("nanobind::python_error", SIGABRT) or crashes (SIGSEGV);
- ``concurrent.futures`` or ``threading`` code between taking a lock and the block that gives
  it back: the lock stays taken, and the thread that needs it next waits forever;
- an import (of numpy, JAX, ...): a traceback through the import machinery, or a module left
  half-initialised for the exit handlers.

So the command's handler raises only when no frame of the main thread's stack is in such code
(:func:`_unsafe`); otherwise it keeps the signal and looks again every ``RETRY_S`` on a
SIGALRM timer (a timer, not a thread: the handler may have interrupted code that holds a
threading lock, and arming a timer takes none), so the interrupt is raised as soon as the
main thread is back in code that can take it. Python code that C code calls back and whose
exceptions it drops (a weak reference's callback, some C extensions' callbacks) cannot be seen
on that stack: an interrupt raised there comes back through ``sys.unraisablehook``, unprinted,
and is raised again the same way. Waits that last (cohorts training in other
threads, worker processes) block in C calls made from batchlab's own frames
(``SimpleQueue.get``, ``select``), where it is raised at once. Other threads never see it:
Python runs signal handlers in the main thread only, and Linux delivers a signal sent to the
process to its main thread when that thread does not block it, so no thread needs to block it.

SIGTERM is handled the same way and exits 143 (128 + 15, as a process killed by it would
report); Ctrl-C exits 130. A second signal while the first one is being handled exits at
once. The handlers are installed when ``batchlab.cli`` is imported as the command (the
installed ``batchlab`` or ``python -m batchlab.cli``), before numpy, typer or JAX are
imported, so the first ~0.1 s of the interpreter's own start is all that Python handles.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

RETRY_S = 0.02
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread for a SIGINT or SIGTERM (a KeyboardInterrupt, so every
    ``except KeyboardInterrupt`` and ``finally`` that cleans up after Ctrl-C runs for both)."""


_received: list[int] = []  # the signals received, in order (list.append: no lock taken)
_state = {"raised": False, "exiting": False}


def is_the_command() -> bool:
    """Whether this interpreter was started as the ``batchlab`` command: the installed script,
    or ``python -m batchlab.cli`` (read from ``sys.orig_argv``: a worker process that imports
    the command's main module gets the command's ``sys.argv``, not its ``orig_argv``)."""
    args = iter(getattr(sys, "orig_argv", [])[1:])
    for arg in args:
        if arg in ("-W", "-X", "--check-hash-based-pycs"):  # the interpreter's options with a value
            next(args, None)
        elif arg in ("-m", "-c"):
            return arg == "-m" and next(args, None) == "batchlab.cli"
        elif not arg.startswith("-"):
            return Path(arg).name == "batchlab"
    return False


def install() -> None:
    """Handle SIGINT and SIGTERM in this process as described above (idempotent; the main
    thread only)."""
    if signal.getsignal(signal.SIGINT) is _on_signal or threading.current_thread() is not threading.main_thread():
        return
    _paths_that_cannot_take_it()  # now: the handler must not import anything
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored on entry (a shell script's background
            signal.signal(signum, _on_signal)  # job): it stays ignored, as Python leaves it
    signal.signal(signal.SIGALRM, _on_retry)
    if sys.unraisablehook is not _on_unraisable:
        _previous_hook[0] = sys.unraisablehook
        sys.unraisablehook = _on_unraisable


def received() -> int | None:
    """The first signal received (SIGINT or SIGTERM), or None."""
    return _received[0] if _received else None


def exit_status() -> int:
    """130 for Ctrl-C, 143 for SIGTERM: 128 + the signal's number."""
    return 128 + (received() or signal.SIGINT)


def finish() -> None:
    """The command is done (or unwinding): raise no more; a signal from now on is only kept
    (it still decides the exit status), and a second one exits at once."""
    _state["exiting"] = True
    signal.setitimer(signal.ITIMER_REAL, 0)


def _on_signal(signum: int, frame) -> None:
    if _received:  # a second signal, the first one still pending or being handled
        _exit_now()
    _received.append(signum)
    if not _state["exiting"]:
        _raise_if_safe(frame)


def _on_retry(signum: int, frame) -> None:
    if _received and not _state["raised"] and not _state["exiting"]:
        _raise_if_safe(frame)


def _on_unraisable(unraisable) -> None:
    """The interrupt was raised in Python code that C code called and whose exceptions it drops
    (it reports them here: "Exception ignored in ..."; seen once in some 15 suite runs, in a
    C extension's callback that the stack walk cannot see): not printed, raised again at the
    next point that can take it."""
    if isinstance(unraisable.exc_value, Interrupted):
        _state["raised"] = False
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    _previous_hook[0](unraisable)


_previous_hook = [sys.__unraisablehook__]


def _raise_if_safe(frame) -> None:
    if _unsafe(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)
        return
    _state["raised"] = True
    raise Interrupted(signal.Signals(_received[0]).name)


def _exit_now() -> None:
    """A second signal: leave without waiting for anything (what is stored stays stored)."""
    os.write(2, b"interrupted again: stopped at once\n")
    os._exit(exit_status())


def _unsafe(frame) -> bool:
    """Whether the main thread, stopped at ``frame``, is in code that cannot take an exception
    (see the module's docstring): anywhere below a frame of those packages, a garbage-collection
    callback or a ``__del__``."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(_paths_that_cannot_take_it()) or code in callbacks or code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@functools.cache
def _paths_that_cannot_take_it() -> tuple[str, ...]:
    """Where an exception raised at an arbitrary point does harm: the frameworks whose C++ calls
    Python back, Python's thread and process machinery (locks taken outside ``with`` blocks; a
    half-started process; ``multiprocessing/connection.py``, where the command waits for its
    workers in a ``select``, is left out), the import system, weak references. Found without
    importing anything."""
    stdlib = Path(os.__file__).parent
    paths = ["<frozen importlib", *(str(stdlib / name) for name in ("threading.py", "queue.py", "weakref.py")),
             *(os.path.join(stdlib, folder, "") for folder in ("importlib", "concurrent", "logging")),
             *(str(path) for path in (stdlib / "multiprocessing").glob("*.py") if path.name != "connection.py")]
    for package in ("jax", "jaxlib", "torch"):
        spec = importlib.util.find_spec(package)
        paths += [os.path.join(location, "") for location in (spec.submodule_search_locations or [])] if spec else []
    return tuple(paths)
