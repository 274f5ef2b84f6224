"""Per-step rows of a monitored run, and their trips to the store.

Values arrive as whatever the loop computes them in (torch tensors, JAX arrays, floats) and
stay so until a flush: turning a device value into a Python float waits for the device, and a
monitor that did so at every step would stall a GPU's pipeline once per step. Every
``flush_every`` updates, and at :meth:`Recorder.close`, the whole run so far is written in one
transaction (``Store.write``: the run's row and its series, replacing the previous flush;
by default also no more often than keeps writes under 2% of the time, ``choices.py``), so a
crashed process leaves the last flush behind, whole, with status ``running``. The same rows
then go to the sinks of ``log_to`` (TensorBoard, MLflow, W&B: ``batchlab/sinks/``), each row
once, so they hold the store's numbers.

A flush rewrites the run's series rather than appending to them (the store keeps one array per
series): its cost grows with the steps recorded, which is why flushes are every few hundred
updates and not every one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from batchlab.config import RunConfig
from batchlab.errors import BatchlabError
from batchlab.monitor.choices import MIN_FLUSH_UPDATES, WRITE_SHARE
from batchlab.results import Monitored, RunResult
from batchlab.sinks import Sink, SinkRun, close_sinks, open_sinks
from batchlab.version import __version__

RUNNING, FINISHED = "running", "finished"


def as_float(value: Any) -> float:
    """One recorded value as a Python float (a one-element tensor or array, or a number)."""
    if hasattr(value, "item"):
        return float(value.reshape(-1)[0].item()) if getattr(value, "ndim", 0) else float(value.item())
    return float(value)


class Recorder:
    """Rows of (step, samples_seen, wall_time, values...) and the store they go to.

    ``describe(batch_size)`` makes the run's (config, monitored record) when it is first written.
    ``db=None`` keeps the rows in memory only (:meth:`steps`); a store that cannot be written is
    refused here, before the first step, with the store's one-line error. The sinks
    (:meth:`log_to`) get each row once, at the flush that writes it to the store.
    """

    def __init__(self, db: str | Path | None, run_id: str, describe: Callable[[int], tuple[RunConfig, Monitored]],
                 flush_every: int | None, before_flush: Callable[[], None] | None = None):
        check_flush_every(flush_every)
        self.run_id, self.describe = run_id, describe
        self.flush_every, self.adaptive = flush_every or MIN_FLUSH_UPDATES, flush_every is None
        self.write_seconds = 0.0  # spent in flushes so far
        self.before_flush = before_flush  # hands over the rows a monitor still holds
        self.rows: list[tuple[int, int, float, dict[str, Any]]] = []
        self.names: dict[str, None] = {}  # value names in first-seen order
        self.sizes: dict[int, int] = {}  # batch size -> updates that used it
        self.started = time.time()
        self.unflushed = 0
        self.sinks: list[Sink] = []
        self.sent = 0  # rows[:sent] went to the sinks
        self.settled = 0  # rows[:settled] hold Python floats
        self.store = None
        if db is not None:
            from batchlab.store import Store

            self.store = Store(db)
            try:
                self.store.check_writable()
            except BaseException:
                self.store.close()
                raise

    def log_to(self, log_to: Any, name: str, settings: dict[str, Any]) -> None:
        """Open the sinks of ``log_to`` for this run (the store is let go if one cannot open)."""
        try:
            self.sinks = open_sinks(log_to, SinkRun(self.run_id, name, "monitored", settings))
        except BaseException:
            self.close()
            raise

    def add(self, step: int, samples_seen: int, values: dict[str, Any]) -> None:
        """Keep one update's values (device values stay on the device until a flush)."""
        self.rows.append((step, samples_seen, time.time() - self.started, values))
        self.names.update(dict.fromkeys(values))

    def count_update(self, batch_size: int) -> None:
        """Note an update (recorded or not) and flush when ``flush_every`` have passed."""
        self.sizes[batch_size] = self.sizes.get(batch_size, 0) + 1
        self.unflushed += 1
        if self.unflushed >= self.flush_every and not (
                self.adaptive and self.write_seconds > WRITE_SHARE * (time.time() - self.started)):
            self.flush()

    def settle(self) -> None:
        """Turn the values of rows not yet flushed into Python floats, once: every later
        flush rewrites the whole series, and converting each value again would cost an
        ``item()`` per value per flush."""
        for i in range(self.settled, len(self.rows)):
            step, samples, wall, values = self.rows[i]
            self.rows[i] = (step, samples, wall, {name: as_float(v) for name, v in values.items()})
        self.settled = len(self.rows)

    def steps(self) -> dict[str, np.ndarray]:
        """The per-step series so far: ``step``, ``samples_seen``, ``wall_time`` and each value
        (NaN at steps where it was not measured)."""
        self.settle()
        series = {"step": np.array([r[0] for r in self.rows], np.int64),
                  "samples_seen": np.array([r[1] for r in self.rows], np.int64),
                  "wall_time": np.array([r[2] for r in self.rows], np.float64)}
        for name in self.names:
            series[name] = np.array([r[3].get(name, np.nan) for r in self.rows], np.float64)
        return series

    def result(self, status: str) -> RunResult:
        """The run so far as a :class:`RunResult` (no per-epoch series: the loop is the user's)."""
        size = max(self.sizes, key=lambda b: (self.sizes[b], b)) if self.sizes else 0  # the most used
        config, monitored = self.describe(size)
        return RunResult(config, status, {}, self.steps(), None, train_seconds=time.time() - self.started,
                         monitored=monitored)

    def flush(self, status: str = RUNNING) -> None:
        """Write the run so far in one transaction (nothing to do without a store or updates)."""
        began = time.perf_counter()
        try:
            self._flush(status)
        finally:
            self.write_seconds += time.perf_counter() - began

    def _flush(self, status: str) -> None:
        self.unflushed = 0
        if self.before_flush is not None:
            self.before_flush()
        if self.store is not None and self.sizes:
            self.store.write([self.result(status)], __version__)
        if self.sinks and self.sent < len(self.rows):
            self.settle()
            rows = [(step, self.started + wall, _finite(values)) for step, _, wall, values in self.rows[self.sent:]]
            for sink in self.sinks:
                sink.write(rows)
            self.sent = len(self.rows)

    def close(self) -> None:
        """Write the finished run and let go of the store and the sinks."""
        if self.store is None and not self.sinks:
            return
        try:
            self.flush(FINISHED)
        finally:
            sinks, self.sinks = self.sinks, []
            try:
                close_sinks(sinks)
            finally:
                if self.store is not None:
                    self.store.close()
                    self.store = None


def check_flush_every(flush_every: Any) -> None:
    """None (the default rule, ``choices.py``) or a whole number of updates >= 1."""
    if flush_every is not None and (isinstance(flush_every, bool) or not isinstance(flush_every, int)
                                    or flush_every < 1):
        raise BatchlabError(f"flush_every={flush_every!r} must be None or a whole number of updates >= 1")


def _finite(values: dict[str, float]) -> dict[str, float]:
    """One settled row's values without NaN (a value not measured at that update)."""
    return {name: value for name, value in values.items() if value == value and abs(value) != float("inf")}
