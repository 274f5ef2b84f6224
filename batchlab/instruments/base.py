"""What an instrument is: a stable name, where it is computed, and when (its schedule).

Per-step instruments are computed inside the compiled step from quantities the step
already has, so their schedule only thins what is recorded; checkpoint instruments run
between epochs on saved parameters, at the epochs their schedule names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """When an instrument runs: every ``every`` steps or epochs, at given epochs, or log-spaced."""

    unit: str = "step"  # "step" or "epoch"
    every: int = 1
    at: tuple[int, ...] = ()
    log_points: int = 0  # > 0: about this many log-spaced points over the run

    def mask(self, total: int) -> np.ndarray:
        """Which of 1..total (steps or epochs) are recorded."""
        points = np.arange(1, total + 1)
        if self.at:
            return np.isin(points, self.at)
        if self.log_points:
            chosen = np.unique(np.round(np.geomspace(1, total, self.log_points)).astype(int))
            return np.isin(points, chosen)
        return points % self.every == 0


EVERY_STEP = Schedule()


def parse_epoch_schedule(spec: str, epochs: int | None) -> tuple[int, ...]:
    """Checkpoint epochs from ``"2,30"`` (epoch 0 = before training), ``"every:10"`` or ``"log:6"``.

    The last two need the run's length ``epochs``.
    """
    from batchlab.config import parse_ints
    from batchlab.errors import BatchlabError

    kind, _, value = spec.partition(":")
    if kind in ("every", "log"):
        if epochs is None:
            raise BatchlabError(f"checkpoint schedule {spec!r} needs the number of epochs")
        count = parse_ints(value, f"'{kind}:' value", low=1)[0]
        schedule = Schedule("epoch", every=count) if kind == "every" else Schedule("epoch", log_points=count)
        return tuple(int(e) for e in np.flatnonzero(schedule.mask(epochs)) + 1)
    return tuple(sorted(set(parse_ints(spec, "checkpoint epochs"))))


@dataclass(frozen=True)
class Instrument:
    """A measured quantity: ``name`` is its stable key in the store."""

    name: str
    where: str  # "step" (inside the compiled step) or "checkpoint" (between epochs)
    schedule: Schedule = EVERY_STEP
    cost: int = 0  # relative cost, for ordering presets
    doc: str = ""
