"""Figures drawn in helper processes, so that drawing overlaps the command's own work.

A command that trains needs matplotlib and pandas only at its end, yet importing them takes
about 0.5 s and drawing and writing a figure (PNG and SVG) about 0.45 s on a 2-core machine,
all holding the GIL. Helpers forked when the command starts import them on the core that is
idle while the command imports JAX, then draw one figure each at a time, side by side.

Helpers are forked only before JAX is imported (forking a process that runs JAX's threads
can deadlock the child) and only where ``fork`` exists (Linux); otherwise, or with
``BATCHLAB_FIGURE_HELPERS=0``, figures are drawn in this process, with the same files. A
helper ignores Ctrl-C (the command handles it), exits when the command does, and a helper
that died is replaced by drawing in this process.

This module stands outside ``plots/``: importing anything there loads matplotlib, which the
command's own process is to be spared.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from batchlab import profiling

FIGURES_MODULE = "batchlab.plots"  # a figure named without a module is a function of this one


def _draw(figure: str | Callable, args: tuple, kwargs: dict, path: Path) -> list[Path]:
    plots = importlib.import_module(FIGURES_MODULE)
    if isinstance(figure, str):
        module, _, name = figure.rpartition(":")
        figure = getattr(importlib.import_module(module) if module else plots, name)
    return plots.save_figure(figure(*args, **kwargs), path)


def _start_helpers(theirs: list[Connection], ours: list[Connection]) -> None:
    """The first helper: import the figures' modules once, fork the other helpers from itself
    (they start with everything imported, and the command's core is not shared by several
    imports), then serve its own pipe. ``ours`` are the command's ends, closed here so that a
    helper sees the end of its pipe when the command is gone, however it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
    for conn in ours:
        conn.close()
    try:
        importlib.import_module(FIGURES_MODULE)
    except Exception:  # noqa: BLE001 - the command then draws its figures itself and reports what fails
        return
    others = []
    for index in range(1, len(theirs)):
        pid = os.fork()
        if pid == 0:
            for other in theirs[:index] + theirs[index + 1:]:
                other.close()
            _serve(theirs[index])
            os._exit(0)
        others.append(pid)
    for conn in theirs[1:]:
        conn.close()
    _serve(theirs[0])
    for pid in others:  # the command waits for this helper: then every helper is gone
        os.waitpid(pid, 0)


def _serve(conn: Connection) -> None:
    """Draw each figure asked for on ``conn`` until told to stop or the command is gone."""
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            reply: list[Path] | Exception = _draw(*job)
        except Exception as exc:  # noqa: BLE001 - handed to the command, which reports it
            reply = exc
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
            conn.send(RuntimeError(f"{type(reply).__name__}: {reply}"))


def _helpers_wanted() -> bool:
    return (sys.platform == "linux" and "jax" not in sys.modules
            and os.environ.get("BATCHLAB_FIGURE_HELPERS", "1") != "0")


class FigureDrawer:
    """Draws ``batchlab.plots`` figures to files, in helper processes where it can.

    >>> drawer = FigureDrawer()            # first thing in a command: before JAX is imported
    >>> drawer.draw("learning_curves", history, "acc", path=out / "learning_curves_acc")
    >>> drawer.files()                     # waits: [[PNG, SVG] of each figure], in order
    """

    def __init__(self, helpers: int = 2) -> None:
        self._pipes: list[Connection] = []  # the command's end of each helper's pipe
        self._process: multiprocessing.Process | None = None  # the first helper
        self._jobs: list[tuple[int | None, tuple]] = []  # (helper index or None: drawn here, job)
        if helpers > 0 and _helpers_wanted():
            context = multiprocessing.get_context("fork")
            pairs = [context.Pipe() for _ in range(helpers)]
            self._pipes = [ours for ours, _ in pairs]
            theirs = [end for _, end in pairs]
            self._process = context.Process(target=_start_helpers, args=(theirs, self._pipes), daemon=True,
                                            name="batchlab-figures")
            self._process.start()
            for end in theirs:
                end.close()

    def draw(self, figure: str | Callable, *args: Any, path: str | Path, **kwargs: Any) -> None:
        """Ask for the figure ``figure(*args, **kwargs)`` written to ``path`` (PNG and SVG).

        ``figure`` names a function of ``batchlab.plots`` or ``"module:function"``: a helper
        imports it. A function given as such (a closure cannot travel) is drawn here, when
        :meth:`files` is called."""
        job = (figure, args, kwargs, Path(path))
        sent = sum(helper is not None for helper, _ in self._jobs)
        helper = sent % len(self._pipes) if self._pipes and isinstance(figure, str) else None
        if helper is not None:
            try:
                self._pipes[helper].send(job)
            except (BrokenPipeError, OSError):
                helper = None
        self._jobs.append((helper, job))

    def files(self) -> list[list[Path]]:
        """The files of each figure asked for, in the order asked; raises the first failed
        figure's error once all are done."""
        with profiling.phase("figures"):
            results = [self._result(helper, job) for helper, job in self._jobs]
        self._jobs.clear()
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _result(self, helper: int | None, job: tuple) -> list[Path] | Exception:
        if helper is not None:
            try:
                return self._pipes[helper].recv()
            except (EOFError, OSError):  # the helper died: draw it here
                pass
        try:
            return _draw(*job)
        except Exception as exc:  # noqa: BLE001 - raised by files() after the other figures
            return exc

    def close(self, wait: bool = True) -> None:
        """Let the helpers go once their figures are done (``wait``), or stop them now."""
        for conn in self._pipes:
            try:
                conn.send(None)
            except OSError:
                pass
            conn.close()
        self._pipes.clear()
        if self._process is not None:
            self._process.join(timeout=10.0 if wait else 0.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join()
            self._process = None

    def __enter__(self) -> FigureDrawer:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self.close(wait=exc_type is None)  # an error (or Ctrl-C) does not wait for figures
