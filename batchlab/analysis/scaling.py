"""Steps, samples and time to a target, the best learning rate per batch size, and the
critical batch size fit (``science.md`` section 4; McCandlish et al. 2018; Shallue et al. 2019).

With the learning rate tuned for each B, steps S and samples E = B S to reach a target
satisfy S(B) = S_min (1 + B_crit / B), i.e. E(B) = E_min + S_min B with E_min = S_min B_crit.
Below B_crit doubling B nearly halves the steps (perfect scaling); far above it, it buys
almost nothing. What a single fit does not give is here too: bootstrap 95% intervals for B_crit
and S_min (resample the seeds within each (B, lr), pick each B's best lr again among the
settings where every seed reached the target, refit), and the operational critical batch size
(Zhang et al., ICLR 2025): the B at which the steps to the target exceed the perfect-scaling
prediction S(B_0) B_0 / B by 20%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab.analysis.findings import Interval, t_half_width
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


def interval95(values: pd.Series) -> float:
    """Half-width of a 95% t-interval of the mean (NaN for fewer than 2 values)."""
    values = values.dropna()
    if len(values) < 2:
        return float("nan")
    return t_half_width(values.std(ddof=1), len(values))


def per_setting(summary: pd.DataFrame, reached: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and 95% interval over seeds for each (B, lr): steps/samples/time to target,
    final test accuracy and generalization gap (train_acc - test_acc), fraction of seeds reaching."""
    frame = summary[["run_id", "batch_size", "lr", "train_acc", "test_acc"]].merge(reached, on="run_id")
    frame["gap_acc"] = frame["train_acc"] - frame["test_acc"]
    rows = []
    for (b, lr), group in frame.groupby(["batch_size", "lr"]):
        row = {"batch_size": b, "lr": lr, "seeds": len(group), "reached": float(group.steps.notna().mean())}
        for key in ("steps", "samples", "seconds", "test_acc", "gap_acc"):
            row[key] = group[key].mean()
            row[f"{key}_std"] = group[key].std(ddof=1) if len(group) > 1 else np.nan
            row[f"{key}_ci95"] = interval95(group[key])
        rows.append(row)
    return pd.DataFrame(rows)


def best_per_batch(settings: pd.DataFrame) -> pd.DataFrame:
    """For each B the learning rate that reaches the target in the fewest steps with every seed
    (or, where none does, the one with the best final test accuracy)."""
    best = []
    for b, group in settings.groupby("batch_size"):
        done = group[group.reached == 1.0]
        pick = done.loc[done.steps.idxmin()] if len(done) else group.loc[group.test_acc.idxmax()]
        best.append(pick)
    frame = pd.DataFrame(best).reset_index(drop=True)
    return frame.astype({"batch_size": int, "seeds": int})


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
    from scipy.optimize import curve_fit

    b = np.asarray(batch_sizes, float)
    s = np.asarray(steps, float)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 3:
        raise BatchlabError("the critical-batch fit needs steps-to-target at 3 or more batch sizes")
    b, s = b[ok], s[ok]

    def model(bb, log_s_min, log_b_crit):
        return log_s_min + np.log1p(np.exp(log_b_crit) / bb)

    start = (math.log(s.min()), math.log(np.median(b)))
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


@dataclass(frozen=True)
class Bootstrap:
    """Refits over seed resamples: one entry per resample (NaN where a fit failed)."""

    b_crit: np.ndarray
    s_min: np.ndarray
    operational: np.ndarray  # inf where the resample never exceeds the excess in the grid
    excess_at_largest: np.ndarray  # E(B_max) / E(B_0) at the best lrs
    batch_sizes: np.ndarray  # the B used in the fit


def bootstrap_fit(runs: pd.DataFrame, eligible: pd.DataFrame, resamples: int, seed: int = 0,
                  excess: float = 0.2) -> Bootstrap:
    """Resample the seeds within each eligible (B, lr), re-pick each B's best lr (fewest mean
    steps) and refit S(B) = S_min (1 + B_crit / B). ``eligible``: the (batch_size, lr) pairs
    where every seed reached the target in the data (kept fixed, so a resample that happens to
    draw only the lucky seeds of a partly censored setting cannot promote it)."""
    rng = np.random.default_rng(seed)
    sizes = np.sort(eligible.batch_size.unique())
    best = np.full((resamples, len(sizes)), np.inf)
    for j, b in enumerate(sizes):
        for lr in eligible[eligible.batch_size == b].lr:
            steps = runs[(runs.batch_size == b) & np.isclose(runs.lr, lr)].steps.to_numpy(float)
            means = steps[rng.integers(0, len(steps), size=(resamples, len(steps)))].mean(axis=1)
            best[:, j] = np.minimum(best[:, j], means)
    b_crit, s_min, operational = (np.full(resamples, np.nan) for _ in range(3))
    for r in range(resamples):
        operational[r] = operational_batch(sizes, best[r], excess)
        try:
            fit = fit_critical_batch(sizes, best[r])
        except (BatchlabError, RuntimeError, ValueError):  # too few sizes, or no convergence
            continue
        b_crit[r], s_min[r] = fit.b_crit, fit.s_min
    excess_at_largest = best[:, -1] * sizes[-1] / (best[:, 0] * sizes[0]) if len(sizes) else np.full(resamples, np.nan)
    return Bootstrap(b_crit, s_min, operational, excess_at_largest, sizes)


def percentile_interval(point: float, samples: np.ndarray) -> Interval:
    """``point`` with the 2.5% and 97.5% quantiles of its bootstrap ``samples`` (NaNs, failed
    refits, left out; ``inf`` kept, so a censored share above 2.5% gives an infinite bound)."""
    samples = np.asarray(samples, float)
    samples = samples[~np.isnan(samples)]
    if len(samples) < 2:
        return Interval(point, math.nan, math.nan, len(samples))
    low, high = np.quantile(samples, [0.025, 0.975])
    return Interval(point, float(low), float(high), len(samples))
