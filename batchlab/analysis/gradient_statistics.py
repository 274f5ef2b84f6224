"""Statistics of batch-gradient norms against batch size: fitted exponent, theory coverage, B_simple
from the Monte-Carlo means, joint verdicts (what the gradient-norm study's analysis,
``analysis/gradient_norm.py``, computes with).

Inputs are the Monte-Carlo draws of a checkpoint (``science.md`` section 3.2): for each batch
size B, the squared norms ||sum_{i in batch} g_i||^2 of ``trials`` random batches. Theory
(section 4; McCandlish et al. 2018): E||sum_i g_i||^2 = B tr(Sigma) f(B) + B^2 ||G||^2 with
f(B) = (P - B)/(P - 1) without replacement from P rows (1 with replacement), so the
squared batch-sum norm grows like B^k with k = 1 while B ||G||^2 << tr(Sigma) and k -> 2 after.
DataFrames and numpy only: nothing here imports the engine.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from batchlab.analysis.findings import (AGREES, BOOTSTRAP, DISAGREES, INCONCLUSIVE, Interval, t_half_width,
                                        verdict_from_interval)


def exponent(sizes: Sequence[int], draws: Sequence[Sequence[float]], *, seed: int = 0) -> Interval:
    """Exponent k of E||g_B||^2 ~ B^k: least-squares slope of log(mean draws) against log(B).

    The 95% interval is a percentile bootstrap that resamples the trials within each B
    (``BOOTSTRAP`` resamples); ``n`` is the smallest number of trials. Fewer than two batch
    sizes give NaN.
    """
    x = np.log(np.asarray(sizes, float))
    values = [np.asarray(d, float) for d in draws]
    if len(values) < 2:
        return Interval(math.nan, math.nan, math.nan, 0)
    slope = float(np.polyfit(x, np.log([v.mean() for v in values]), 1)[0])
    rng = np.random.default_rng(seed)
    boot = np.stack([np.log(v[rng.integers(0, len(v), size=(BOOTSTRAP, len(v)))].mean(axis=1)) for v in values],
                    axis=1)
    xc = x - x.mean()
    slopes = (boot - boot.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    low, high = np.quantile(slopes, [0.025, 0.975])
    return Interval(slope, float(low), float(high), min(len(v) for v in values))


def simultaneous_interval(values: Sequence[float], family: int) -> Interval:
    """Mean of ``values`` with a t-interval at level 1 - 0.05/family (Bonferroni).

    When ``family`` intervals are checked together, all of them cover their true means with
    probability >= 95%; one 95% interval per B would miss somewhere about 1 - 0.95^m of the
    time (43% for m = 11 batch sizes) even when the theory is exact.
    """
    arr = np.asarray(values, float)
    n = len(arr)
    mean = float(arr.mean()) if n else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t_half_width(arr.std(ddof=1), n, quantile=1 - 0.025 / max(family, 1))
    return Interval(mean, mean - half, mean + half, n)


def theory_check(trials: pd.DataFrame, theory: pd.DataFrame) -> pd.DataFrame:
    """Per epoch and B: the mean squared batch-sum norm with its simultaneous 95% interval
    (over the B's of that epoch), the theory value, and whether the interval covers it.

    ``trials``: columns epoch, batch_size, sq_norm_sum (one row per trial); ``theory``:
    columns epoch, batch_size, theory_sq_norm (batch-sum reduction).
    """
    rows = []
    for epoch, at_epoch in trials.groupby("epoch", sort=True):
        sizes = sorted(at_epoch.batch_size.unique())
        for b in sizes:
            iv = simultaneous_interval(at_epoch.loc[at_epoch.batch_size == b, "sq_norm_sum"], len(sizes))
            rows.append({"epoch": epoch, "batch_size": int(b), "mean_sq_norm": iv.mean, "mean_sq_low": iv.low,
                         "mean_sq_high": iv.high, "trials": iv.n})
    table = pd.DataFrame(rows).merge(theory[["epoch", "batch_size", "theory_sq_norm"]], on=["epoch", "batch_size"])
    # Covered = the interval of (measured - theory) contains zero, i.e. no detectable difference.
    table["covered"] = [verdict_from_interval(lo - th, hi - th, 1) == INCONCLUSIVE
                        for lo, hi, th in zip(table.mean_sq_low, table.mean_sq_high, table.theory_sq_norm)]
    table["relative_error"] = table.mean_sq_norm / table.theory_sq_norm - 1
    return table


def joint_verdict(verdicts: Sequence[str]) -> str:
    """A claim made of several parts (or holding at every B): agrees when every part agrees,
    disagrees when any part disagrees, inconclusive otherwise."""
    if verdicts and all(v == AGREES for v in verdicts):
        return AGREES
    return DISAGREES if DISAGREES in verdicts else INCONCLUSIVE


def coverage_verdict(covered: Sequence[bool]) -> str:
    """Theory agrees when every B's interval covers it; disagrees when any does not."""
    if len(covered) == 0:
        return INCONCLUSIVE
    return AGREES if all(covered) else DISAGREES


def noise_scale_fit(sizes: Sequence[int], mean_sq: Sequence[float], std_error: Sequence[float], pool: int, *,
                    replace: bool) -> dict[str, float]:
    """||G||^2, tr(Sigma) and B_simple from the batch-mean E||g_B||^2 measured at several B.

    Weighted least squares of E||g_B||^2 = ||G||^2 + tr(Sigma) f(B)/B on x = f(B)/B, each B
    weighted by 1/std_error^2 of its Monte-Carlo mean (f = 1 with replacement, (P - B)/(P - 1)
    without): intercept ||G||^2, slope tr(Sigma), B_simple = slope / intercept (``science.md``
    section 4, McCandlish et al. 2018). Unweighted, the noisy small-B means swamp ||G||^2.
    B_simple is NaN when the intercept is not positive (||G||^2 not resolved).
    """
    b = np.asarray(sizes, float)
    factor = 1.0 if replace else (pool - b) / max(pool - 1, 1)
    y = np.asarray(mean_sq, float)
    # B = P draws the whole pool every time: zero spread, an exact point; keep its weight finite.
    se = np.maximum(np.asarray(std_error, float), 1e-9 * np.abs(y))
    slope, intercept = np.polyfit(factor / b, y, 1, w=1.0 / se)
    return {"grad_sq": float(intercept), "trace": float(slope),
            "noise_scale": float(slope / intercept) if intercept > 0 else math.nan}
