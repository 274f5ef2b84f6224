"""Host-side bookkeeping of a cohort: which updates happened, per-epoch and per-step series.

The compiled epoch returns every step's outputs for every run; here they are cut to the
updates that really happened (a run stopped early or diverged keeps none after that),
numbered (``step``, ``samples_seen``), timed, and averaged Keras-style per epoch.

Per-step records are bounded whatever the epochs: a run of more than ``STEP_RECORDS``
updates keeps the per-step values of every k-th update only, k = ceil(updates /
STEP_RECORDS) (updates whose number is a multiple of k); per-epoch records, running averages
included, always use every update. Each epoch's kept values are compacted at once, so what a
cohort holds is what it keeps (``grid.memory_estimate`` counts it).
"""

from __future__ import annotations

import numpy as np


def batch_counts(n: int, batch_size: int, steps: int) -> np.ndarray:
    """Real examples in each batch of an epoch (the last one may be partial)."""
    counts = np.full(steps, batch_size, dtype=np.int64)
    if steps * batch_size > n:
        counts[-1] = n - (steps - 1) * batch_size
    return counts


STEP_RECORDS = 200_000  # per-step records a run keeps at most (see the module docstring)


def record_every(updates: int) -> int:
    """Every how many updates a run of ``updates`` updates keeps its per-step values."""
    return max(1, -(-updates // STEP_RECORDS))


class CohortRecorder:
    """Collects the records of the runs of one cohort, epoch by epoch; ``every``: keep the
    per-step values of updates that are multiples of it (:func:`record_every`)."""

    def __init__(self, runs: int, metrics0: dict[str, np.ndarray], score: str = "acc", every: int = 1):
        self.score = score  # "acc", or "r2" for regression (models/losses.py)
        self.every = every
        self.steps_done = np.zeros(runs, np.int64)
        self.samples_done = np.zeros(runs, np.int64)
        self.diverged_step = np.full(runs, -1, np.int64)
        self.epochs: list[dict[str, np.ndarray]] = [{
            **metrics0, "epoch": np.zeros(runs, np.int64), "step": np.zeros(runs, np.int64),
            "samples_seen": np.zeros(runs, np.int64), "wall_time": np.zeros(runs),
            "train_loss_running": np.full(runs, np.nan), f"train_{score}_running": np.full(runs, np.nan)}]
        # Per epoch: where each run's kept steps start in the compacted arrays, and those arrays.
        self.step_chunks: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []

    def add_epoch(self, epoch: int, counts: np.ndarray, active: np.ndarray, diverged_step: np.ndarray,
                  per_step: dict[str, np.ndarray], metrics: dict[str, np.ndarray], t_start: float,
                  t_end: float) -> np.ndarray:
        """Record one epoch (``counts``: real examples in each of its batches); returns which
        runs diverged during it."""
        r, steps = per_step["mb_loss"].shape
        newly_diverged = active & (diverged_step >= 0) & (self.diverged_step < 0)
        # Updates that happened: all of an active run's, up to (excluding) a diverging one.
        cutoff = np.where(newly_diverged, diverged_step - self.steps_done - 1, steps)
        applied = active[:, None] & (np.arange(steps)[None, :] < cutoff[:, None])
        self.diverged_step = np.where(newly_diverged, diverged_step, self.diverged_step)

        weights = applied * counts[None, :]
        step_numbers = self.steps_done[:, None] + np.cumsum(applied, axis=1)
        samples = self.samples_done[:, None] + np.cumsum(weights, axis=1)
        self._keep(epoch, applied & (step_numbers % self.every == 0), step_numbers, samples, per_step, t_start, t_end)
        self.steps_done = step_numbers[:, -1]
        self.samples_done = samples[:, -1]

        seen = np.maximum(weights.sum(axis=1), 1)
        row = dict(metrics, epoch=np.full(r, epoch, np.int64), step=self.steps_done.copy(),
                   samples_seen=self.samples_done.copy(), wall_time=np.full(r, t_end))
        for name in ("loss", self.score):  # Keras-style running average, weighted by batch size
            values = np.where(weights > 0, per_step[f"mb_{name}"], 0.0)
            row[f"train_{name}_running"] = (values * weights).sum(axis=1) / seen
        self.epochs.append(row)
        return newly_diverged

    def _keep(self, epoch: int, kept: np.ndarray, step_numbers: np.ndarray, samples: np.ndarray,
              per_step: dict[str, np.ndarray], t_start: float, t_end: float) -> None:
        """The epoch's kept per-step values, compacted (all runs' rows one after another)."""
        r, steps = kept.shape
        wall = t_start + np.arange(1, steps + 1) / steps * (t_end - t_start)
        starts = np.concatenate([[0], np.cumsum(kept.sum(axis=1))])
        self.step_chunks.append((starts, {
            "epoch": np.full(int(starts[-1]), epoch, np.int64), "step": step_numbers[kept],
            "samples_seen": samples[kept], "wall_time": np.broadcast_to(wall, (r, steps))[kept],
            **{name: values[kept] for name, values in per_step.items()}}))

    def series(self, i: int, end_epoch: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per-epoch (0..end_epoch) and per-step arrays of run ``i``."""
        rows = self.epochs[: end_epoch + 1]
        history = {key: np.array([row[key][i] for row in rows]) for key in rows[0]}
        history = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in history.items()}
        order = ["epoch", "step", "samples_seen", "wall_time"]
        history = {k: history[k] for k in order + [k for k in history if k not in order]}
        chunks = self.step_chunks[:end_epoch]
        steps = {}
        for key in self.step_chunks[0][1] if self.step_chunks else ("epoch", "step", "samples_seen"):
            parts = [series[key][starts[i]:starts[i + 1]] for starts, series in chunks]
            values = np.concatenate(parts) if parts else np.zeros(0)
            steps[key] = values.astype(np.float64) if values.dtype.kind == "f" else values
        return history, steps
