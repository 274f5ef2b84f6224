"""Figures drawn in helper processes, so that drawing overlaps the command's own work.

A command that trains needs matplotlib and pandas only at its end, yet importing them takes
about 0.5 s and drawing and writing a figure (PNG and SVG) about 0.45 s on a 2-core machine,
all holding the GIL. Helpers forked when the command starts import them on the core that is
idle while the command imports JAX, then draw one figure each at a time, side by side. The
report has them build its studies' sections (analyses and figures) the same way.

Helpers are forked only from a process that runs one thread and has not imported JAX (forking
a process that runs JAX's threads can deadlock the child), and only where ``fork`` exists
(Linux); otherwise, or with ``BATCHLAB_FIGURE_HELPERS=0``, the jobs run in this process, with
the same results. A helper ignores Ctrl-C (the command handles it), exits when the command
does, and a job of a helper that died runs in this process.

This module stands outside ``plots/``: importing anything there loads matplotlib, which the
command's own process is to be spared.
"""

from __future__ import annotations

import importlib
import itertools
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Sequence

from batchlab import profiling

FIGURES_MODULE = "batchlab.plots"  # a figure named without a module is a function of this one


def _resolve(function: str | Callable) -> Callable:
    """``"module:function"``, a bare name of ``batchlab.plots``, or a function itself."""
    if not isinstance(function, str):
        return function
    module, _, name = function.rpartition(":")
    return getattr(importlib.import_module(module or FIGURES_MODULE), name)


def draw_figure(figure: str | Callable, args: tuple, kwargs: dict, path: Path) -> list[Path]:
    """Draw ``figure(*args, **kwargs)`` and write it to ``path`` (PNG and SVG)."""
    plots = importlib.import_module(FIGURES_MODULE)
    return plots.save_figure(_resolve(figure)(*args, **kwargs), path)


def _start_helpers(theirs: list[Connection], ours: list[Connection]) -> None:
    """The first helper: import the figures' modules once, fork the other helpers from itself
    (they start with everything imported, and the command's core is not shared by several
    imports), then serve its own pipe. ``ours`` are the command's ends, closed here so that a
    helper sees the end of its pipe when the command is gone, however it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the command's handler (forked with it): the command
    # ends a helper with SIGTERM only when it does not wait for it
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
    """Do each job asked for on ``conn`` until told to stop or the command is gone. A thread
    takes the jobs as they come, so that a helper busy sending a large result still reads
    the next job: the command, sending it, would otherwise wait for the helper, which waits
    for the command to read its result."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                job = None
            jobs.put(job)
            if job is None:
                return

    threading.Thread(target=receive, daemon=True).start()
    while (job := jobs.get()) is not None:
        try:
            reply: Any = _run(*job)
        except Exception as exc:  # noqa: BLE001 - handed to the command, which reports it
            reply = exc
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # a result that does not pickle
            conn.send(RuntimeError(f"{type(reply).__name__}: {reply}"))
        except OSError:  # the command is gone
            return


def _run(function: str | Callable, args: tuple, kwargs: dict) -> Any:
    return _resolve(function)(*args, **kwargs)


def _helpers_wanted() -> bool:
    """Fork only a process that runs one thread (forking while another thread holds a lock can
    leave that lock held forever in the child) and has not imported JAX (its threads start on
    first use)."""
    return (sys.platform == "linux" and "jax" not in sys.modules and threading.active_count() == 1
            and os.environ.get("BATCHLAB_FIGURE_HELPERS", "1") != "0")


class FigureDrawer:
    """Draws ``batchlab.plots`` figures to files, in helper processes where it can (and runs
    other named functions there: :meth:`call`).

    >>> drawer = FigureDrawer()            # first thing in a command: before JAX is imported
    >>> drawer.draw("learning_curves", history, "acc", path=out / "learning_curves_acc")
    >>> drawer.files()                     # waits: [[PNG, SVG] of each figure], in order
    """

    def __init__(self, helpers: int = 2) -> None:
        self._pipes: list[Connection] = []  # the command's end of each helper's pipe
        self._process: multiprocessing.Process | None = None  # the first helper
        self._asked: list[tuple[int, int | None, tuple]] = []  # (ticket, helper or None: run here, job)
        self._returned: dict[int, Any] = {}  # ticket -> result, collected while waiting for a later job
        self._tickets = itertools.count()
        self._sent = 0
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

    def draw(self, figure: str | Callable, *args: Any, path: str | Path, **kwargs: Any) -> int:
        """Ask for the figure ``figure(*args, **kwargs)`` written to ``path`` (PNG and SVG);
        returns the job's ticket (for :meth:`files`).

        ``figure`` names a function of ``batchlab.plots`` or ``"module:function"``: a helper
        imports it. A function given as such (a closure cannot travel) is drawn here, when
        :meth:`files` waits for it."""
        job = (figure, args, kwargs, Path(path))
        if isinstance(figure, str):
            return self._submit((f"{__name__}:draw_figure", job, {}))
        return self._ask(None, (draw_figure, job, {}))

    def call(self, function: str, *args: Any, **kwargs: Any) -> int:
        """Ask for ``function(*args, **kwargs)`` (``"module:function"``; arguments and result
        must pickle), e.g. a report section full of figures; :meth:`results` has its result."""
        return self._submit((function, args, kwargs))

    def _submit(self, job: tuple) -> int:
        helper = self._sent % len(self._pipes) if self._pipes else None
        if helper is not None:
            try:
                self._pipes[helper].send(job)
                self._sent += 1
            except (BrokenPipeError, OSError):
                helper = None
        return self._ask(helper, job)

    def _ask(self, helper: int | None, job: tuple) -> int:
        ticket = next(self._tickets)
        self._asked.append((ticket, helper, job))
        return ticket

    def results(self, tickets: Sequence[int] | None = None) -> list[Any]:
        """What the jobs of ``tickets`` (by default every job not yet collected) returned, in
        the order asked, each failed job's exception in its place. Waits for those jobs only
        (and for the ones asked before them): later jobs go on being done meanwhile."""
        if tickets is None:
            tickets = sorted([*self._returned, *(ticket for ticket, _, _ in self._asked)])
        last = max(tickets, default=-1)
        with profiling.phase("figures"):
            while self._asked and self._asked[0][0] <= last:  # replies come in the order asked
                ticket, helper, job = self._asked.pop(0)
                self._returned[ticket] = self._result(helper, job)
        return [self._returned.pop(ticket) for ticket in tickets]

    def ready(self, tickets: Sequence[int]) -> bool:
        """Whether the jobs of ``tickets`` are done (those to be run in this process count as
        done: they run when collected), without waiting: takes the replies already sent."""
        for helper, conn in enumerate(self._pipes):
            for ticket, job in [(t, j) for t, h, j in self._asked if h == helper]:  # its replies' order
                if not self._has_reply(conn):
                    break
                self._asked.remove((ticket, helper, job))
                self._returned[ticket] = self._result(helper, job)
        waiting = {ticket for ticket, helper, _ in self._asked if helper is not None}
        return not waiting.intersection(tickets)

    @staticmethod
    def _has_reply(conn: Connection) -> bool:
        try:
            return conn.poll()
        except (EOFError, OSError):  # closed: ``_result`` runs the job here
            return True

    def files(self, tickets: Sequence[int] | None = None) -> list[list[Path]]:
        """The files of the figures of ``tickets`` (by default every one not yet collected), in
        the order asked; raises the first failed figure's error once they are all done."""
        results = self.results(tickets)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def _result(self, helper: int | None, job: tuple) -> Any:
        if helper is not None:
            try:
                return self._pipes[helper].recv()
            except (EOFError, OSError):  # the helper died: do it here
                pass
        try:
            return _run(*job)
        except Exception as exc:  # noqa: BLE001 - returned in its place, after the other jobs
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
