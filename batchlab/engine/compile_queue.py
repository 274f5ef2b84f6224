"""Programs compiled ahead, in background threads, once per process.

A program is asked for by its key (:meth:`CompileQueue.submit`) long before it runs: commands
queue every cohort's programs before the first cohort trains, so later cohorts' programs
compile while earlier ones train. A cohort whose programs are still queued builds the first
queued program itself (:meth:`CompileQueue.ready_all`), adding its core to the compilation.
Programs are traced one at a time in queue order (tracing holds the GIL: several threads
tracing at once only slow each other and the cohorts that train meanwhile) and compiled side
by side (XLA's compiler releases it).
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Hashable, Sequence

from batchlab.engine.parallel import one_by_one


class InOrder:
    """A lock whose waiters go in the order of the programs they build (the order they were
    queued in: the first cohort's first), whichever thread builds them."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._waiting: list[tuple[float, int]] = []
        self._tickets = itertools.count()
        self._busy = False
        self.building = threading.local()  # the queue position of the program this thread builds

    def __enter__(self) -> None:
        entry = (getattr(self.building, "order", math.inf), next(self._tickets))
        with self._turns:
            heapq.heappush(self._waiting, entry)
            try:
                self._turns.wait_for(lambda: not self._busy and self._waiting[0] == entry)
            except BaseException:  # Ctrl-C while waiting: leave the queue, so the next caller is not stuck
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._turns.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._busy = True

    def __exit__(self, *exc) -> None:
        with self._turns:
            self._busy = False
            self._turns.notify_all()

    def run_as(self, order: int, build: Callable):
        """Run ``build`` as the program at queue position ``order`` (its turn to trace)."""
        self.building.order = order
        try:
            return build()
        finally:
            self.building.order = math.inf


class _Queued:
    """A program waiting in the queue: its key, how to build it and its position."""

    def __init__(self, key: Hashable, build: Callable, order: int):
        self.key, self.build, self.order = key, build, order


class CompileQueue:
    """Each program once per process, built in a background thread or by a cohort that waits
    for it; ``tracing`` is the turn every build takes to trace (``programs._build``)."""

    def __init__(self) -> None:
        self.tracing = InOrder()
        self._programs: dict[Hashable, Future] = {}
        self._queued: dict[Future, _Queued] = {}
        self._replacements: dict[Future, Future] = {}  # a program taken out of the queue -> its build in a cohort's thread
        self._lock = threading.RLock()  # re-entrant: a done-callback may run in the thread that holds it
        self._positions = itertools.count()
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        """Compilation threads: one core is left to training (one thread here), so compiling
        ahead never slows the cohort that trains meanwhile."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 1) - 1)),
                                            thread_name_prefix="batchlab-compile")
        return self._pool

    def submit(self, key: Hashable, build: Callable) -> Future:
        """The program under ``key``: held in this process, else queued for a background thread."""
        with self._lock:
            future = self._programs.get(key)
            if future is None or future.cancelled():
                order = next(self._positions)
                future = self._programs[key] = self._executor().submit(self.tracing.run_as, order, build)
                self._queued[future] = _Queued(key, build, order)
                future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._queued.pop(future, None)

    def ready_all(self, futures: Sequence[Future]) -> list:
        """The compiled programs of ``futures``. While some of them wait in the queue, this
        thread builds the first program of the queue, which may be an earlier cohort's:
        programs are built in queue order whichever thread builds them, so the first cohorts
        (the longest: the smallest batch sizes) start training first. A thread never builds a
        later cohort's program meanwhile: its own cohort would then wait for that."""
        while True:
            with self._lock:
                futures = [self._replacements.get(future, future) for future in futures]
                # One look at what waits: a compilation thread starts a program without this lock,
                # so two looks can disagree (the second found nothing waiting: a crash, seen once).
                waiting = [f for f in self._queued if not f.running()]
                if not any(future in waiting for future in futures):
                    break
                taken = self._take(min(waiting, key=lambda f: self._queued[f].order))  # None: started meanwhile
            if taken is not None:
                self._run(*taken)
        for _ in one_by_one(futures):  # where Ctrl-C can stop this thread's wait (parallel.py)
            pass
        return [future.result() for future in futures]

    def _take(self, queued: Future) -> tuple[Future, _Queued] | None:
        """Take a queued program out of the queue (call with the lock held); None if a
        compilation thread started it meanwhile."""
        entry = self._queued[queued]  # read first: cancelling runs the callback that forgets it
        if not queued.cancel():
            return None
        inline: Future = Future()
        inline.set_running_or_notify_cancel()
        self._programs[entry.key] = self._replacements[queued] = inline
        return inline, entry

    def _run(self, inline: Future, entry: _Queued) -> None:
        """Build a program taken out of the queue; an error goes to whoever waits for it
        (Ctrl-C also stops this thread)."""
        try:
            inline.set_result(self.tracing.run_as(entry.order, entry.build))
        except BaseException as exc:
            inline.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def cancel_pending(self) -> None:
        """Drop queued compilations that have not started (a command that stops early)."""
        with self._lock:
            for key, future in list(self._programs.items()):
                if future.cancel():
                    del self._programs[key]
                    self._queued.pop(future, None)


QUEUE = CompileQueue()
