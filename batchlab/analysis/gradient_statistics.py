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

from batchlab.analysis.findings import INCONCLUSIVE, verdict_from_interval, within
from batchlab.analysis.intervals import BOOTSTRAP, PERCENTILE, Interval, percentile_bootstrap, simultaneous_t


def exponent(sizes: Sequence[int], draws: Sequence[Sequence[float]], *, seed: int = 0) -> Interval:
    """Exponent k of E||g_B||^2 ~ B^k: least-squares slope of log(mean draws) against log(B).

    The 95% interval is a percentile bootstrap that resamples the trials within each B
    (``BOOTSTRAP`` resamples; hundreds of independent trials per B, where a percentile bootstrap
    covers); ``n`` is the smallest number of trials. Fewer than two batch sizes give no interval.
    """
    x = np.log(np.asarray(sizes, float))
    values = [np.asarray(d, float) for d in draws]
    if len(values) < 2:
        return Interval(math.nan, math.nan, math.nan, 0, PERCENTILE, "fewer than 2 batch sizes")
    slope = float(np.polyfit(x, np.log([v.mean() for v in values]), 1)[0])
    rng = np.random.default_rng(seed)
    boot = np.stack([np.log(v[rng.integers(0, len(v), size=(BOOTSTRAP, len(v)))].mean(axis=1)) for v in values],
                    axis=1)
    xc = x - x.mean()
    slopes = (boot - boot.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
    iv = percentile_bootstrap(slope, slopes)
    return Interval(slope, iv.low, iv.high, min(len(v) for v in values), PERCENTILE)


def theory_check(trials: pd.DataFrame, theory: pd.DataFrame, tolerance: float = 0.1) -> pd.DataFrame:
    """Per epoch and B: the mean squared batch-sum norm with its simultaneous 95% interval
    (Bonferroni over the B's of that epoch, kept >= 0), the theory value, the relative error
    measured / theory - 1 with its interval, and the equivalence verdict on "within
    +-``tolerance`` of the theory" (``equivalent``: agrees / disagrees / inconclusive, read off
    the interval by :func:`batchlab.analysis.findings.within`). ``covered`` (the interval
    contains the theory) is descriptive only: failing to reject is not agreeing.

    ``trials``: columns epoch, batch_size, sq_norm_sum (one row per trial); ``theory``:
    columns epoch, batch_size, theory_sq_norm (batch-sum reduction).
    """
    rows = []
    for epoch, at_epoch in trials.groupby("epoch", sort=True):
        sizes = sorted(at_epoch.batch_size.unique())
        for b in sizes:
            iv = simultaneous_t(at_epoch.loc[at_epoch.batch_size == b, "sq_norm_sum"], len(sizes))
            rows.append({"epoch": epoch, "batch_size": int(b), "mean_sq_norm": iv.mean,
                         "mean_sq_low": max(iv.low, 0.0), "mean_sq_high": iv.high, "trials": iv.n})
    table = pd.DataFrame(rows).merge(theory[["epoch", "batch_size", "theory_sq_norm"]], on=["epoch", "batch_size"])
    table["covered"] = [verdict_from_interval(lo - th, hi - th, 1) == INCONCLUSIVE
                        for lo, hi, th in zip(table.mean_sq_low, table.mean_sq_high, table.theory_sq_norm)]
    table["relative_error"] = table.mean_sq_norm / table.theory_sq_norm - 1
    table["relative_low"] = table.mean_sq_low / table.theory_sq_norm - 1
    table["relative_high"] = table.mean_sq_high / table.theory_sq_norm - 1
    table["equivalent"] = [within(Interval(e, lo, hi, 2), -tolerance, tolerance)
                           for e, lo, hi in zip(table.relative_error, table.relative_low, table.relative_high)]
    return table


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
