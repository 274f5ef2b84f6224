"""Sinks: the per-step series of a run sent where users already look (TensorBoard, MLflow,
W&B), beside the batchlab store.

A sink is made for one run: ``open(run)`` once, ``write(rows)`` with the rows not yet sent
(each ``(step, wall_time, {name: value})``, finite values only), ``close()`` at the end. The
monitor sends rows when it writes the store (every ``flush_every`` updates and at ``close()``),
so the store and the sinks hold the same numbers; ``batchlab export --format tensorboard|mlflow``
sends stored runs the same way (``store/export.py``).

``log_to`` takes a sink object, a name (``"tensorboard"``, ``"mlflow"``, ``"wandb"``), a name
with where (``"tensorboard:runs"``, ``"mlflow:file:./mlruns"``, ``"wandb:./wandb-logs"``) or a
list of these. Each tool is an optional extra and is imported only when its sink is opened.
Nothing here reads or writes the store, so the store layer may use it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from batchlab.errors import BatchlabError

Row = tuple[int, float, dict[str, float]]  # (step, wall time in seconds since the epoch, values)
AXES = ("epoch", "step", "samples_seen", "wall_time")  # the x axes of a series, not values
SINKS = {"tensorboard": ("batchlab.sinks.tensorboard_sink", "TensorBoardSink"),
         "mlflow": ("batchlab.sinks.mlflow_sink", "MLflowSink"),
         "wandb": ("batchlab.sinks.wandb_sink", "WandbSink")}


@dataclass(frozen=True)
class SinkRun:
    """What a sink is told about its run: the batchlab id, a label, the kind and settings."""

    run_id: str
    name: str
    kind: str = "monitored"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``name-<first 8 hex digits of the id>``: a folder or run name unique per run."""
        return f"{self.name}-{self.run_id[:8]}"


class Sink(Protocol):
    def open(self, run: SinkRun) -> None: ...
    def write(self, rows: Sequence[Row]) -> None: ...
    def close(self) -> None: ...


def make_sinks(log_to: Any) -> list[Sink]:
    """Sink objects (not yet opened) from a ``log_to`` value (see the module's doc)."""
    if log_to is None:
        return []
    items = [log_to] if isinstance(log_to, str) or hasattr(log_to, "write") else list(log_to)
    sinks = []
    for item in items:
        if not isinstance(item, str):
            if not all(callable(getattr(item, m, None)) for m in ("open", "write", "close")):
                raise BatchlabError(f"log_to: {item!r} is not a sink (it needs open, write and close)")
            sinks.append(item)
            continue
        kind, _, where = item.partition(":")
        if kind not in SINKS:
            raise BatchlabError(f"log_to: unknown sink {kind!r}; choose {', '.join(SINKS)}")
        module, name = SINKS[kind]
        sink_class = getattr(importlib.import_module(module), name)
        sinks.append(sink_class(where) if where else sink_class())
    return sinks


def open_sinks(log_to: Any, run: SinkRun) -> list[Sink]:
    """The sinks of ``log_to``, opened for ``run`` (a missing tool or an unwritable place fails
    here, before any training, with one line)."""
    sinks = make_sinks(log_to)
    opened: list[Sink] = []
    try:
        for sink in sinks:
            sink.open(run)
            opened.append(sink)
    except BaseException:
        close_sinks(opened)
        raise
    return sinks


def close_sinks(sinks: Iterable[Sink]) -> None:
    """Close every sink, then raise the first error met (if any)."""
    error = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:  # the others still get closed
            error = error or exc
    if error is not None:
        raise error


def series_rows(series: dict[str, np.ndarray], prefix: str = "", wall_base: float = 0.0) -> list[Row]:
    """A run's series (``step`` axis, optional ``wall_time`` in seconds from ``wall_base``) as
    rows; value names get ``prefix``; NaN and non-numeric columns are left out."""
    names = [k for k, v in series.items() if k not in AXES and np.asarray(v).dtype.kind in "fiub"]
    n = len(next(iter(series.values()))) if series else 0
    steps = series.get("step", np.arange(1, n + 1))
    walls = series.get("wall_time", np.zeros(n))
    rows = []
    for i in range(n):
        values = {prefix + k: float(series[k][i]) for k in names}
        rows.append((int(steps[i]), wall_base + float(walls[i]),
                     {k: v for k, v in values.items() if math.isfinite(v)}))
    return rows


def needs(package: str, extra: str) -> BatchlabError:
    """The one-line error for a sink whose tool is not installed."""
    return BatchlabError(f"log_to={extra!r} needs {package}: pip install 'batchlab[{extra}]'")
