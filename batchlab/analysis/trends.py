"""Trends over batch sizes, with the intervals of ``analysis/intervals.py``: the slope of
group means against log2 B (:func:`slope_t`), how the spread of replicates changes with B
(:func:`log_spread_slope`), and a rank association over a few points with exact permutation
p-values (:func:`spearman_permutation`). Their assumptions are in ``intervals``' table."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from batchlab.analysis.intervals import LEVEL, LOG_SPREAD, SLOPE_T, Interval, finite, none, t_quantile


def slope_weights(x: Sequence[float]) -> np.ndarray:
    """c_k with slope = sum_k c_k y_k for the least-squares line through (x_k, y_k)."""
    x = np.asarray(x, float)
    xc = x - x.mean()
    return xc / (xc @ xc)


def slope_t_core(c: np.ndarray, groups: Sequence[np.ndarray], level: float = LEVEL):
    """(slope, low, high) for groups of shape (..., n_k): slope = sum c_k mean_k, variance
    sum c_k^2 s_k^2 / n_k, df = (sum p_k)^2 / sum p_k^2 / (n_k - 1) with p_k = c_k^2 s_k^2 / n_k."""
    slope = sum(ck * g.mean(axis=-1) for ck, g in zip(c, groups))
    parts = [ck ** 2 * g.var(axis=-1, ddof=1) / g.shape[-1] for ck, g in zip(c, groups)]
    total = sum(parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = total ** 2 / sum(p ** 2 / (g.shape[-1] - 1) for p, g in zip(parts, groups))
    half = t_quantile(df, level) * np.sqrt(total)
    return slope, slope - half, slope + half


def slope_t(xs: Sequence[float], groups: Sequence[Sequence[float]], *, log_x: bool = True) -> Interval:
    """Least-squares slope of the group means against log2(x) (or x), with a 95% t-interval.

    slope = sum_k c_k mean_k, c_k = (x_k - xbar) / sum (x - xbar)^2; SE^2 = sum c_k^2 s_k^2 / n_k
    (groups independent); Welch-Satterthwaite degrees of freedom. Assumes normal groups with
    possibly different variances. Needs 2 or more x values and 2 or more values per group."""
    x = np.log2(np.asarray(xs, float)) if log_x else np.asarray(xs, float)
    values = [finite(g) for g in groups]
    keep = [len(v) > 0 for v in values]
    x, values = x[keep], [v for v, k in zip(values, keep) if k]
    if len(values) < 2 or np.ptp(x) == 0:
        return none(math.nan, 0, "fewer than 2 groups with values", SLOPE_T)
    c = slope_weights(x)
    slope = float(c @ np.array([v.mean() for v in values]))
    n = min(len(v) for v in values)
    if n < 2:
        return none(slope, n, "one seed in a group", SLOPE_T)
    if all(np.ptp(v) == 0 for v in values):
        return none(slope, n, "the values of every group are all equal, so their spread cannot be estimated",
                    SLOPE_T)
    _, low, high = slope_t_core(c, [v[None, :] for v in values])
    return Interval(slope, float(low[0]), float(high[0]), n, SLOPE_T)


def log_spread_core(c: np.ndarray, groups: Sequence[np.ndarray], relative: bool = False, level: float = LEVEL):
    """(slope, low, high) of log2 of the spread against the x behind ``c``, groups (..., n_k).

    y_k = log s_k^2 (or log(s_k^2 / mean_k^2) with ``relative``) minus its bias
    psi((n_k-1)/2) - log((n_k-1)/2); Var(log s_k^2) = psi'((n_k-1)/2) for normal data. The slope
    of log2 s against x is sum c_k y_k / (2 ln 2), with a z-interval (its variance is known)."""
    from scipy import special, stats

    ys, variances = [], []
    for g in groups:
        n = g.shape[-1]
        half_df = (n - 1) / 2
        var = g.var(axis=-1, ddof=1)
        y = np.log(var) - (special.digamma(half_df) - math.log(half_df))
        v = special.polygamma(1, half_df)
        if relative:
            mean = g.mean(axis=-1)
            y = y - 2 * np.log(np.abs(mean))
            v = v + 4 * var / (n * mean ** 2)  # delta method: Var(log mean^2) ~ 4 s^2 / (n mean^2)
        ys.append(y)
        variances.append(v)
    scale = 1 / (2 * math.log(2))  # from log s^2 to log2 s
    slope = scale * sum(ck * y for ck, y in zip(c, ys))
    half = stats.norm.ppf(0.5 + level / 2) * scale * np.sqrt(sum(ck ** 2 * v for ck, v in zip(c, variances)))
    return slope, slope - half, slope + half


def log_spread_slope(xs: Sequence[float], groups: Sequence[Sequence[float]], *, relative: bool = False) -> Interval:
    """How the spread of replicates changes with x: slope of log2(standard deviation) per
    doubling of x (``relative``: of the coefficient of variation s / mean), 95% interval.

    Each group's log s^2 has, for normal replicates, mean log sigma^2 + psi((n-1)/2) -
    log((n-1)/2) and variance psi'((n-1)/2) (Bartlett & Kendall 1946): the slope's variance is
    known, so the interval is z-based and needs no estimate of it. A bootstrap of 5 standard
    deviations covered only ~80%. Needs 3 or more values per group (with 2, log s^2 is too
    skewed for the interval to cover)."""
    x = np.log2(np.asarray(xs, float))
    values = [finite(g) for g in groups]
    method = LOG_SPREAD + (" of s / mean" if relative else "")
    if len(values) < 2 or np.ptp(x) == 0:
        return none(math.nan, 0, "fewer than 2 groups with values", method)
    n = min(len(v) for v in values)
    if n < 3:
        return none(math.nan, n, f"{n} seeds in a group; a spread's interval needs 3 or more", method)
    if any(np.ptp(v) == 0 for v in values):
        return none(math.nan, n, "a group's values are all equal (zero spread has no logarithm)", method)
    c = slope_weights(x)
    slope, low, high = log_spread_core(c, [v[None, :] for v in values], relative)
    return Interval(float(slope[0]), float(low[0]), float(high[0]), n, method)


# --- rank tests -----------------------------------------------------------------------------

def spearman(x, y) -> np.ndarray | float:
    """Spearman's rank correlation: Pearson's correlation of the ranks of x and y (ties share
    their average rank); NaN when x or y is constant. 2-D inputs give one rho per row."""
    from scipy import stats

    rx = stats.rankdata(np.asarray(x, float), axis=-1)
    ry = stats.rankdata(np.asarray(y, float), axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    norm = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, (rx * ry).sum(axis=-1) / norm, np.nan)
    return float(rho) if rho.ndim == 0 else rho


@dataclass(frozen=True)
class RankTest:
    """Spearman's rho of ``n`` points and its exact one-sided permutation p-values."""

    rho: float
    n: int
    p_greater: float  # P(rho* >= rho) over all n! orderings of y
    p_less: float  # P(rho* <= rho)


def spearman_permutation(x, y) -> RankTest:
    """Spearman's rho with exact permutation p-values: rho against every one of the n!
    orderings of y (n <= 8). Valid whatever the distribution, when the points are exchangeable
    under no association; with n points the smallest one-sided p is 1/n! (1/6 with 3 points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 2 or n > 8:
        return RankTest(spearman(x, y) if n >= 2 else math.nan, n, math.nan, math.nan)
    rho = spearman(x, y)
    if not math.isfinite(rho):
        return RankTest(rho, n, math.nan, math.nan)
    perms = np.array(list(itertools.permutations(range(n))))
    null = spearman(np.broadcast_to(x, perms.shape), y[perms])
    tol = 1e-12
    return RankTest(rho, n, float(np.mean(null >= rho - tol)), float(np.mean(null <= rho + tol)))
