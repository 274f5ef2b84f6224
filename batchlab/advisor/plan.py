"""The advisor's plan: its time budget, the batch sizes and lr grids it tries, and the epochs
each batch size trains, all sized from what the earlier steps measured.

Shares of the budget (each step stops early when its share is spent; what was cut is said):
probing (memory and throughput) 15%, the lr at the base batch size 25%, noise and branching
15%, the lr x B sweep the rest.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from batchlab.errors import BatchlabError

SHARES = {"probe": 0.15, "base": 0.25, "noise": 0.15}
MIN_BUDGET = 20.0  # seconds: a probe, five lrs at the base batch and a pilot need at least this here
MAX_EPOCHS = 500
PROBE_STEPS = 50  # updates each probe times (at least one epoch)
BASE_BATCH = 32
LR_STEP = 2.0  # neighbouring lrs of a grid differ by this factor (3 loses up to ~1.8x the updates)
CENTER_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
SAFETY = 2.0  # a batch size trains this many times the epochs its predicted steps to the target need
SWEEP_SEEDS = 3


def parse_budget(text: str | float | int) -> float:
    """Seconds from ``"10m"``, ``"90s"``, ``"1h30m"`` or a number of seconds; at least
    :data:`MIN_BUDGET` (refused before anything trains, with the minimum named)."""
    if isinstance(text, bool):
        raise BatchlabError(f"budget must be a duration like 10m, 90s or 1h, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*",
                             str(text))
        if not parts or not any(parts.groups()):
            raise BatchlabError(f"budget must be a duration like 10m, 90s or 1h, got {text!r}")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not math.isfinite(seconds) or seconds < MIN_BUDGET:
        raise BatchlabError(f"budget {text!r} is too small: the probes and the pilot need at least "
                            f"{MIN_BUDGET:g} s here")
    return seconds


@dataclass
class Clock:
    """The budget's clock: seconds used and left, and what was cut for lack of time."""

    budget: float
    start: float = field(default_factory=time.perf_counter)
    cut: list[str] = field(default_factory=list)

    @property
    def used(self) -> float:
        return time.perf_counter() - self.start

    @property
    def left(self) -> float:
        return self.budget - self.used

    def share(self, name: str) -> float:
        """Seconds the step ``name`` may take (its share of the whole budget, at most what is left)."""
        return min(SHARES[name] * self.budget, max(self.left, 0.0))


def candidate_sizes(n_train: int, max_batch: int | None) -> list[int]:
    """Powers of two from 8 below the top, and the top itself: N (full batch, batch gradient
    descent) or ``max_batch`` when that is smaller. The batch sizes a user would consider."""
    top = min(n_train, max_batch or n_train)
    return [2 ** k for k in range(3, 40) if 2 ** k < top] + [top]


def base_batch(sizes: list[int]) -> int:
    """The batch size the lr is tuned at first: 32, or the tested size nearest to it."""
    return min(sizes, key=lambda b: abs(math.log(b / BASE_BATCH)))


def lr_grid(center: float, below: int, above: int) -> list[float]:
    """``center`` x LR_STEP^j for j = -below..above, rounded to 3 significant digits."""
    return [float(f"{center * LR_STEP ** j:.3g}") for j in range(-below, above + 1)]


def epochs_within(seconds: float, seconds_per_epoch: float, runs: int, compile_seconds: float) -> int:
    """Epochs that ``runs`` runs (trained together, counted as if one after another: vmapping
    is at least that fast) fit in ``seconds`` after compiling; at least 1, at most MAX_EPOCHS."""
    spare = seconds - compile_seconds
    if spare <= 0 or not math.isfinite(seconds_per_epoch) or seconds_per_epoch <= 0:
        return 1
    return int(max(1, min(MAX_EPOCHS, spare // (seconds_per_epoch * runs))))


def predicted_epochs(batch_size: int, base: int, base_steps: float, noise: float, n_train: int) -> int:
    """Epochs that give SAFETY times the steps S(B) = S_0 (1 + B_n / B) / (1 + B_n / B_0)
    predicted from the base batch size's steps S_0 and a measured noise scale B_n."""
    noise = noise if math.isfinite(noise) and noise > 0 else float(base)
    steps = base_steps * (1 + noise / batch_size) / (1 + noise / base)
    return int(max(1, min(MAX_EPOCHS, math.ceil(SAFETY * steps * batch_size / n_train))))
