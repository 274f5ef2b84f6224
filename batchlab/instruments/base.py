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


@dataclass(frozen=True)
class Instrument:
    """A measured quantity: ``name`` is its stable key in the store."""

    name: str
    where: str  # "step" (inside the compiled step) or "checkpoint" (between epochs)
    schedule: Schedule = EVERY_STEP
    cost: int = 0  # relative cost, for ordering presets
    doc: str = ""
