"""Steps, samples and time to a target, the best learning rate per batch size, and the
critical batch size fit (``science.md`` section 4; McCandlish et al. 2018; Shallue et al. 2019).

With the learning rate tuned for each B, steps S and samples E = B S to reach a target
satisfy S(B) = S_min (1 + B_crit / B), i.e. E(B) = E_min + S_min B with E_min = S_min B_crit.
Below B_crit doubling B nearly halves the steps (perfect scaling); far above it, it buys
almost nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab.analysis.findings import t_half_width
from batchlab.analysis.targets import Target
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
