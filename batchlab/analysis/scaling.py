"""Steps, samples and time to a target, the best learning rate per batch size, and the
critical batch size fit (``science.md`` section 4; McCandlish et al. 2018; Shallue et al. 2019).

With the learning rate tuned for each B, steps S and samples E = B S to reach a target
satisfy S(B) = S_min (1 + B_crit / B), i.e. E(B) = E_min + S_min B with E_min = S_min B_crit.
Below B_crit doubling B nearly halves the steps (perfect scaling); far above it, it buys
almost nothing. What a single fit does not give is here too: the fit repeated on each seed
alone (:func:`seed_fits`, whose spread gives the intervals), and the operational critical
batch size (Zhang et al., ICLR 2025): the B at which the steps to the target exceed the
perfect-scaling prediction S(B_0) B_0 / B by 20%. Which lr is "best" at a B is decided by
``analysis/selection.py``, the one rule every command uses.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab.analysis.selection import run_health
from batchlab.targets import Target
from batchlab.errors import BatchlabError


def to_target(history: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Per run: steps, samples, epochs and seconds at which ``target`` is first reached.

    Linearly interpolated between the two evaluations around the crossing (NaN if never).
    """
    rows = []
    for run_id, run in history.sort_values("epoch").groupby("run_id", sort=False):
        values = run[target.metric].to_numpy()
        hit = np.flatnonzero(target.reached(values))
        row = {"run_id": run_id, "steps": np.nan, "samples": np.nan, "epochs": np.nan, "seconds": np.nan}
        if len(hit):
            i = hit[0]
            if i == 0:
                fraction, j = 0.0, 0
            else:
                j = i - 1
                span = values[i] - values[j]
                fraction = (target.value - values[j]) / span if span != 0 else 1.0
            for key, column in (("steps", "step"), ("samples", "samples_seen"), ("epochs", "epoch"),
                                ("seconds", "wall_time")):
                col = run[column].to_numpy(dtype=float)
                row[key] = col[j] + fraction * (col[i] - col[j])
        rows.append(row)
    return pd.DataFrame(rows)


def per_setting(summary: pd.DataFrame, history: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Per (B, lr): mean and std over seeds of the steps/samples/time to ``target`` (of the seeds
    that reached it), final test accuracy and generalization gap (train_acc - test_acc), the
    share of seeds that reached the target (``reached``) and the share that is usable under the
    best-run rule (``usable``, :mod:`batchlab.analysis.selection`)."""
    frame = summary.drop_duplicates("run_id").reindex(columns=["run_id", "batch_size", "lr", "train_acc", "test_acc"])
    frame = frame.merge(to_target(history, target), on="run_id").merge(run_health(history, summary, target),
                                                                        on="run_id")
    frame["gap_acc"] = frame["train_acc"] - frame["test_acc"]
    rows = []
    for (b, lr), group in frame.groupby(["batch_size", "lr"]):
        row = {"batch_size": b, "lr": lr, "seeds": len(group), "reached": float(group.steps.notna().mean()),
               "usable": float(group.usable.mean())}
        for key in ("steps", "samples", "seconds", "test_acc", "gap_acc"):
            row[key] = group[key].mean()
            row[f"{key}_std"] = group[key].std(ddof=1) if len(group) > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class CriticalBatchFit:
    s_min: float
    b_crit: float
    s_min_se: float
    b_crit_se: float

    @property
    def e_min(self) -> float:
        return self.s_min * self.b_crit

    def steps(self, b) -> np.ndarray:
        return self.s_min * (1.0 + self.b_crit / np.asarray(b, float))

    def regime(self, b: float) -> str:
        """What doubling B from here buys: nearly half the steps, some, or almost none."""
        speedup = (1 + self.b_crit / b) / (1 + self.b_crit / (2 * b))
        if speedup >= 1.8:
            return "perfect scaling"
        if speedup <= 1.1:
            return "no gain"
        return "diminishing returns"


def fit_critical_batch(batch_sizes, steps) -> CriticalBatchFit:
    """Least-squares fit of log S = log S_min + log(1 + B_crit / B), with standard errors."""
    from scipy.optimize import OptimizeWarning, curve_fit

    b = np.asarray(batch_sizes, float)
    s = np.asarray(steps, float)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 3:
        raise BatchlabError("the critical-batch fit needs steps-to-target at 3 or more batch sizes")
    b, s = b[ok], s[ok]

    def model(bb, log_s_min, log_b_crit):
        return log_s_min + np.log1p(np.exp(log_b_crit) / bb)

    start = (math.log(s.min()), math.log(np.median(b)))
    with warnings.catch_warnings():  # 3 points: no covariance; the standard errors are then NaN
        warnings.simplefilter("ignore", OptimizeWarning)
        params, cov = curve_fit(model, b, np.log(s), p0=start, maxfev=20000)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0)) if np.all(np.isfinite(cov)) else np.array([np.nan, np.nan])
    s_min, b_crit = math.exp(params[0]), math.exp(params[1])
    return CriticalBatchFit(s_min, b_crit, s_min * se[0], b_crit * se[1])  # delta method on the logs


def operational_batch(batch_sizes, steps, excess: float = 0.2) -> float:
    """Zhang et al.'s critical batch size: the B at which the steps exceed the perfect-scaling
    prediction from the smallest batch size B_0 by ``excess`` (20%).

    The excess of B is S(B) / (S(B_0) B_0 / B) = E(B) / E(B_0) (samples to target). Returns
    the first crossing of 1 + excess, linearly interpolated in log2 B between the two batch
    sizes around it; ``inf`` if no B of the grid crosses it (censored: beyond the grid).
    """
    b = np.asarray(batch_sizes, float)
    s = np.asarray(steps, float)
    order = np.argsort(b)
    b, s = b[order], s[order]
    if len(b) < 2:
        return math.nan
    ratio = s * b / (s[0] * b[0])
    above = np.flatnonzero(ratio > 1 + excess)
    if len(above) == 0:
        return math.inf
    i = above[0]  # i >= 1: ratio[0] == 1
    fraction = (1 + excess - ratio[i - 1]) / (ratio[i] - ratio[i - 1])
    return float(2 ** (np.log2(b[i - 1]) + fraction * (np.log2(b[i]) - np.log2(b[i - 1]))))


def seed_fits(runs: pd.DataFrame, eligible: pd.DataFrame, excess: float = 0.2) -> pd.DataFrame:
    """The whole choice and fit repeated on each seed alone: one row per seed with its S_min,
    B_crit, operational critical batch size and excess at the largest B (E(B_max) / E(B_0)).

    Each seed is an independent replicate of the sweep (its own initialisation and data order
    at every (B, lr)), so each gets its own best lr per B (fewest steps among the ``eligible``
    (batch_size, lr) pairs, where every seed is usable) and its own fit; the intervals are then
    over seeds (:func:`batchlab.analysis.intervals.geometric_t`). A percentile bootstrap of
    2-3 seeds covered only 66-87% in simulation. A seed whose fit fails has NaN there."""
    sizes = np.sort(eligible.batch_size.unique())
    picked = runs.merge(eligible[["batch_size", "lr"]], on=["batch_size", "lr"])
    rows = []
    for seed, own in picked.groupby("seed"):
        best = own.groupby("batch_size").steps.min().reindex(sizes).to_numpy(float)
        row = {"seed": seed, "s_min": math.nan, "b_crit": math.nan,
               "operational": operational_batch(sizes, best, excess) if np.isfinite(best).all() else math.nan,
               "excess_at_largest": best[-1] * sizes[-1] / (best[0] * sizes[0]) if len(sizes) >= 2 else math.nan}
        try:
            fit = fit_critical_batch(sizes, best)
            row.update(s_min=fit.s_min, b_crit=fit.b_crit)
        except (BatchlabError, RuntimeError, ValueError):  # too few sizes, or no convergence
            pass
        rows.append(row)
    return pd.DataFrame(rows, columns=["seed", "s_min", "b_crit", "operational", "excess_at_largest"])
