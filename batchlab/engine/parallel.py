"""Cohorts side by side: in threads of this process, one per core, or in worker processes.

A compiled program releases Python's GIL while it runs, and each one is single-threaded on a
CPU (``runtime.py``), so two threads training two cohorts use two cores: measured on
this 2-core machine, a B=1 and a B=4 digits cohort trained in two threads took the time of
the longer one alone. Unlike worker processes, threads share the imports, the data on the
device and every compiled program (a program is traced and compiled once per command, not
once per worker), so they pay nothing to start.

Python's default GIL switch interval (5 ms) is far longer than an epoch of a small cohort
here: a thread whose program just finished waited up to 5 ms for the GIL at every epoch, and
the train command's three cohorts took 6-11 s in two threads against 1 s one after another.
While cohorts run side by side the interval is 0.2 ms (0.85 s for those three cohorts).

A cohort that runs in a thread checks :func:`check_cancelled` between epochs: when the
caller stops early (an error in another cohort, Ctrl-C, a consumer that stops reading), the
running cohorts stop at their next epoch instead of finishing, and queued ones never start.
The caller waits for them in :func:`one_by_one`: Ctrl-C raised inside ``concurrent.futures.wait``
could interrupt it between taking some futures' locks and giving them back, and a cohort
finishing later waited for such a lock forever, and with it the pool's shutdown (5 of 49
Ctrl-Cs).

:func:`in_processes` runs jobs in worker processes instead (``--executor processes``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

from batchlab import profiling
from batchlab.errors import BatchlabError

T = TypeVar("T")
SWITCH_INTERVAL_S = 0.0002

_local = threading.local()


class Cancelled(Exception):
    """Raised inside a cohort whose caller stopped waiting for it."""


def check_cancelled() -> None:
    """Stop the calling cohort if its group was cancelled (a no-op outside a group's threads)."""
    stop = getattr(_local, "stop", None)
    if stop is not None and stop.is_set():
        raise Cancelled


def default_threads() -> int:
    """``BATCHLAB_THREADS`` if set (1: cohorts one after another, as on a shared machine), else
    one thread per core this process may use; one where JAX computes on an accelerator, which
    runs one program at a time anyway (host work of the next cohort would overlap, but so
    would its memory)."""
    setting = os.environ.get("BATCHLAB_THREADS", "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise BatchlabError(f"BATCHLAB_THREADS must be a whole number >= 1, got {setting!r}")
        return int(setting)
    import jax

    if jax.default_backend() != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def in_threads(jobs: Sequence[Callable[[], T]], threads: int | None = None) -> Iterator[T]:
    """Run ``jobs`` in up to ``threads`` threads (default :func:`default_threads`), yielding
    their results in the order of ``jobs`` (so what is stored does not depend on which thread
    was quicker), each as soon as it and the jobs before it are done. A job's exception is
    raised here as soon as it happens; leaving the loop early cancels the jobs not finished
    yet and waits for the running ones to stop."""
    threads = min(threads or default_threads(), len(jobs))
    if threads <= 1:
        for job in jobs:
            yield job()
        return
    stop = threading.Event()

    def run(job: Callable[[], T]) -> T:
        _local.stop = stop
        try:
            check_cancelled()
            return job()
        finally:
            _local.stop = None

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batchlab-train")
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    futures = [pool.submit(run, job) for job in jobs]
    try:
        finished = one_by_one(futures)
        for future in futures:
            with profiling.phase("training"):  # this thread waits while the cohorts train
                while not future.done():
                    done = next(finished)
                    if done.exception() is not None:
                        raise done.exception()
            yield future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        sys.setswitchinterval(switch_interval)


def one_by_one(futures: Sequence[Future]) -> Iterator[Future]:
    """``futures`` in the order they finish. The caller waits in ``SimpleQueue.get``, a C call
    made from this frame that takes no lock Python code could leave taken, so Ctrl-C is raised
    there at once; ``cli/interrupts.py`` holds it back while the main thread runs
    ``concurrent.futures`` code (``Future.result``, ``wait``)."""
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(finished.put)
    for _ in futures:
        yield finished.get()


def in_processes(function: Callable[..., T], jobs: Sequence[tuple], workers: int | None = None
                 ) -> Iterator[tuple[int, T]]:
    """Run ``function(*job)`` for each of ``jobs`` in up to ``workers`` spawned worker processes
    (default: one per core), one job at a time per worker; yield ``(index of the job, result)``
    as each finishes. A job's exception is raised here, its traceback in the worker as the
    cause. Leaving the loop, for whatever reason, ends the workers before it returns.

    Each worker has its own pipe, and the command holds the only copy of its end: a worker sees
    the end of the pipe when the command closes it or dies, however it dies (the kernel closes
    a SIGKILLed process's files), and ends at once, in the middle of a job too. A
    ``ProcessPoolExecutor`` did neither: its workers read a queue whose both ends they hold, so
    a SIGKILLed command left them (and the resource tracker) running for good; and the command,
    which runs the exit handlers itself (``cli.console_main``), had multiprocessing's handler
    close that queue before the pool's thread had sent its workers their stop message, then
    wait for those workers forever (3 of 8 sweeps hung after finishing)."""
    context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    todo = iter(enumerate(jobs))
    pool: list[_Worker] = []
    done = False
    try:
        for _ in range(min(workers or os.cpu_count() or 1, len(jobs))):
            pool.append(_Worker(context, function))
            pool[-1].give(next(todo, None))
        while busy := {worker.conn: worker for worker in pool if worker.job is not None}:
            for conn in multiprocessing.connection.wait(list(busy)):
                worker = busy[conn]
                index, result = worker.job[0], worker.result()
                worker.give(next(todo, None))  # before yielding: the caller may take a while
                yield index, result
        done = True
    finally:
        for worker in pool:
            worker.stop(now=not done)


class WorkerTraceback(Exception):
    """Where a job failed in its worker process: the cause of the exception raised here."""


class _Worker:
    """A spawned worker process, its pipe, and the job it does (``(index, args)`` or None)."""

    def __init__(self, context, function: Callable) -> None:
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=_serve, args=(theirs, function), daemon=True,
                                       name="batchlab-worker")
        self.process.start()
        theirs.close()  # the worker's end lives in the worker only: its death is the end of ours
        self.job: tuple[int, tuple] | None = None

    def give(self, job: tuple[int, tuple] | None) -> None:
        self.job = job
        if job is not None:
            self.conn.send(job[1])

    def result(self):
        try:
            ok, value, trace = self.conn.recv()
        except (EOFError, OSError):
            self.process.join()
            raise BatchlabError(f"a worker process ended (exit status {self.process.exitcode}) before "
                                f"returning its result") from None
        if not ok:
            raise value from WorkerTraceback(trace)
        return value

    def stop(self, now: bool) -> None:
        """Close the pipe (the worker then exits); ``now``: also end it mid-job (SIGTERM)."""
        self.conn.close()
        if now:
            self.process.terminate()
        self.process.join()


def _serve(conn, function: Callable) -> None:
    """A worker: ``function(*args)`` for each ``args`` received on ``conn``; each reply is
    ``(ok, result or exception, traceback text)``. A thread reads the pipe, so the worker ends
    as soon as the command closes it or dies, even while it computes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the terminal's whole process group: the command
    jobs: queue.SimpleQueue = queue.SimpleQueue()  # handles it and ends its workers
    threading.Thread(target=_receive, args=(conn, jobs), daemon=True, name="batchlab-pipe").start()
    while True:
        args = jobs.get()
        try:
            reply = (True, function(*args), "")
        except Exception as exc:  # noqa: BLE001 - raised in the command
            reply = (False, exc, traceback.format_exc())
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
            conn.send((False, RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}"), reply[2]))
        except OSError:  # the command is gone
            os._exit(0)


def _receive(conn, jobs: queue.SimpleQueue) -> None:
    while True:
        try:
            jobs.put(conn.recv())
        except (EOFError, OSError):
            os._exit(0)
