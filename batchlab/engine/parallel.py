"""Cohorts side by side in threads of this process, one per core.

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
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
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
        for position, future in enumerate(futures):
            with profiling.phase("training"):  # this thread waits while the cohorts train
                while not future.done():
                    done, _ = wait(futures[position:], return_when=FIRST_COMPLETED)
                    for finished in done:
                        if finished.exception() is not None:
                            raise finished.exception()
            yield future.result()
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        sys.setswitchinterval(switch_interval)
