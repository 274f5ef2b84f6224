"""Every 95% interval a finding states: one function per method, each with its assumption.

A study has few seeds (2-5), so a method is only used where its coverage was checked by
simulation at those sizes (``tests/test_interval_coverage.py`` in the suite,
``benchmarks/bench_coverage.py`` at full size; the measured table is in the README):

======================  ==========================================  ==========================================
method (its ``name``)   what it is for                              assumption
======================  ==========================================  ==========================================
:func:`mean_t`          the mean of independent replicates, kept    replicates roughly normal; the true mean
                        within the quantity's range (proportions    lies in the range, so cutting the interval
                        in [0, 1], epochs in [1, budget])            to it keeps its coverage (Mandelkern 2002)
:func:`geometric_t`     a positive quantity (steps, distances,      replicates log-normal: a t-interval of
                        noise scales, times): its geometric mean     the mean log, mapped back by exp
:func:`welch`           the difference of two means                 normal groups, unequal variances
                                                                    (Welch 1947; Satterthwaite 1946)
:func:`welch_log`       the ratio of two positive quantities        log-normal groups; Welch on the logs
:func:`slope_t`         the least-squares slope of group means      normal groups, unequal variances; the
                        against log2 x (a trend over batch sizes)    slope's variance sum c_k^2 s_k^2 / n_k
                                                                    with Satterthwaite's degrees of freedom
:func:`log_spread_slope`  how the spread (standard deviation) of   normal replicates: Var(log s^2) =
                        replicates changes with log2 x               trigamma((n-1)/2) is known, so the
                                                                    slope's error needs no estimate
                                                                    (Bartlett & Kendall 1946)
:func:`percentile_bootstrap`  a statistic of many trials (>= 100)  the trials are independent draws; a
                                                                    percentile bootstrap under-covers with
                                                                    few values (66% with 2 seeds), so it is
                                                                    never used over seeds
:func:`simultaneous_t`  several means checked together              :func:`mean_t`'s, at level 1 - 0.05/m
                                                                    (Bonferroni)
:func:`spearman_permutation`  a rank association over a few points  none beyond exchangeability: the exact
                        (one per batch size)                         permutation distribution of rho
======================  ==========================================  ==========================================

A statistic computed once per seed (a fitted B_crit, a per-run slope) is a replicate like any
other value: its interval is :func:`mean_t` or :func:`geometric_t` over the seeds.

An interval is *not given* (``low``/``high`` NaN, ``why`` saying why) when there are fewer
than 2 values, or when the values do not vary: a zero standard deviation is not certainty
(two seeds can land on the same quantised accuracy, a deterministic computation repeats
itself) and a t-interval of zero width would decide any claim. Findings are then inconclusive.

The core of each method works on arrays with a leading axis of data sets, so the coverage
simulations run thousands of data sets at once; the public functions take one data set.

References: Student (1908); Welch, Biometrika 34 (1947); Satterthwaite, Biometrics Bulletin 2
(1946); Bartlett & Kendall, JRSS Suppl. 8 (1946); Efron & Tibshirani, "An Introduction to the
Bootstrap" (1993), ch. 13; Mandelkern, Statistical Science 17 (2002); Spearman (1904).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95
BOOTSTRAP = 2000  # resamples of a percentile bootstrap

MEAN_T = "t over seeds"
GEOMETRIC_T = "t on the log scale (geometric mean)"
WELCH = "Welch t"
WELCH_LOG = "Welch t on the log scale (ratio of geometric means)"
SLOPE_T = "t with Welch-Satterthwaite degrees of freedom"
LOG_SPREAD = "log-variance slope with chi-square errors (Bartlett & Kendall 1946)"
PERCENTILE = "percentile bootstrap"
SIMULTANEOUS = "simultaneous t (Bonferroni)"


@dataclass(frozen=True)
class Interval:
    """A point estimate of ``n`` values and its 95% interval [low, high].

    ``method`` names how the interval was computed (the findings print it); where no interval
    can be given, ``low`` and ``high`` are NaN and ``why`` says why in words."""

    mean: float
    low: float
    high: float
    n: int
    method: str = ""
    why: str = ""

    @property
    def given(self) -> bool:
        """Whether there is an interval (an infinite bound, "beyond the grid", counts)."""
        return not (math.isnan(self.low) or math.isnan(self.high))

    def __str__(self) -> str:
        return self.format()

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        """``mean [low, high]unit`` with at least ``digits`` significant digits, more where
        needed so that the bounds print apart (a width of 1e-3 around 1 is not "1 [1, 1]")."""
        mean = self.mean * scale
        if not self.given:
            reason = self.why or f"{self.n} value{'s' if self.n != 1 else ''}"
            return f"{_g(mean, digits)}{unit} (no interval: {reason})"
        low, high = self.low * scale, self.high * scale
        digits = separating_digits((low, mean, high), digits)
        return f"{_g(mean, digits)} [{_g(low, digits)}, {_g(high, digits)}]{unit}"


def _g(value: float, digits: int) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if 1 <= abs(value) < 1e6:  # whole digits are never cut into an exponent: 100, not 1e+02
        digits = max(digits, len(str(int(abs(value)))))
    return f"{value:.{digits}g}"


def separating_digits(values: Sequence[float], digits: int = 3, most: int = 8) -> int:
    """The fewest significant digits (at least ``digits``, at most ``most``) at which values
    that differ also print differently."""
    finite = [v for v in values if math.isfinite(v)]
    for d in range(digits, most + 1):
        printed = [f"{v:.{d}g}" for v in finite]
        if all(a != b for (a, b), (x, y) in zip(itertools.combinations(printed, 2),
                                              itertools.combinations(finite, 2)) if x != y):
            return d
    return most


def none(mean: float, n: int, why: str, method: str = "") -> Interval:
    """An estimate without an interval, and why."""
    return Interval(mean, math.nan, math.nan, n, method, why)


def finite(values) -> np.ndarray:
    """The finite values as a float array (None and NaN dropped)."""
    arr = np.asarray([v for v in np.asarray(values, dtype=object).ravel() if v is not None], float)
    return arr[np.isfinite(arr)]


def t_quantile(df, level: float = LEVEL):
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (exact,
    never a Monte-Carlo draw: t(1)'s 97.5% quantile is 12.71)."""
    from scipy import stats

    return stats.t.ppf(0.5 + level / 2, df)


def _no_spread(n: int) -> str:
    return f"the {n} values are all equal, so their spread cannot be estimated"


# --- mean of replicates -------------------------------------------------------------------

def mean_t_core(x: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) of ``x`` (..., n): mean +- t_{n-1} s / sqrt(n), s with ddof 1."""
    n = x.shape[-1]
    mean = x.mean(axis=-1)
    half = t_quantile(n - 1, level) * x.std(axis=-1, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def mean_t(values, bounds: tuple[float | None, float | None] = (None, None)) -> Interval:
    """Mean of the finite ``values`` with its 95% t-interval, cut to ``bounds``.

    mean +- t_{0.975, n-1} s / sqrt(n) (Student 1908). Assumes independent, roughly normal
    replicates. ``bounds``: the range the quantity can take (a proportion (0, 1), an epoch
    (1, budget)); the true mean lies inside it, so intersecting the interval with it never
    removes the truth and the coverage is the t-interval's (Mandelkern 2002)."""
    x = finite(values)
    n = len(x)
    if n == 0:
        return none(math.nan, 0, "no values", MEAN_T)
    mean = float(x.mean())
    if n < 2:
        return none(mean, n, "one seed", MEAN_T)
    if np.ptp(x) == 0:
        return none(mean, n, _no_spread(n), MEAN_T)
    _, low, high = mean_t_core(x)
    return Interval(mean, *_clip(float(low), float(high), bounds), n, MEAN_T)


def _clip(low: float, high: float, bounds: tuple[float | None, float | None]) -> tuple[float, float]:
    lo, hi = bounds
    if lo is not None:
        low, high = max(low, lo), max(high, lo)
    if hi is not None:
        low, high = min(low, hi), min(high, hi)
    return low, high


def geometric_t(values) -> Interval:
    """Geometric mean of the positive finite ``values`` with a 95% t-interval on the log scale.

    exp(mean log x +- t_{0.975, n-1} s_log / sqrt(n)). For positive quantities that spread by
    factors (steps, noise scales, distances, times): the interval stays positive. Assumes
    log-normal replicates; it covers the geometric mean (the median of a log-normal)."""
    x = finite(values)
    x = x[x > 0]
    iv = mean_t(np.log(x))
    if not iv.given:
        return Interval(math.exp(iv.mean) if iv.n else math.nan, math.nan, math.nan, iv.n, GEOMETRIC_T, iv.why)
    return Interval(math.exp(iv.mean), math.exp(iv.low), math.exp(iv.high), iv.n, GEOMETRIC_T)


# --- differences and ratios -----------------------------------------------------------------

def welch_core(a: np.ndarray, b: np.ndarray, level: float = LEVEL):
    """(mean a - mean b, low, high, degrees of freedom) for ``a`` (..., n_a), ``b`` (..., n_b)."""
    na, nb = a.shape[-1], b.shape[-1]
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    se = np.sqrt(va + vb)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    diff = a.mean(axis=-1) - b.mean(axis=-1)
    half = t_quantile(df, level) * se
    return diff, diff - half, diff + half, df


def welch(a, b, bounds: tuple[float | None, float | None] = (None, None), level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's 95% interval: d +- t_{0.975, df} sqrt(s_a^2/n_a + s_b^2/n_b),
    df by Satterthwaite. Assumes two independent normal groups (variances may differ);
    ``bounds`` as in :func:`mean_t` (a difference of proportions lies in (-1, 1)); ``level``
    other than 95% for a simultaneous interval (Bonferroni)."""
    a, b = finite(a), finite(b)
    n = min(len(a), len(b))
    if n == 0:
        return none(math.nan, 0, "a group has no values", WELCH)
    diff = float(a.mean() - b.mean())
    if n < 2:
        return none(diff, n, "one seed in a group", WELCH)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return none(diff, n, f"the values of each group are all equal ({len(a)} and {len(b)} seeds), so their "
                    "spread cannot be estimated", WELCH)
    _, low, high, _ = welch_core(a, b, level)
    return Interval(diff, *_clip(float(low), float(high), bounds), n, WELCH)


def welch_log(a, b, level: float = LEVEL) -> Interval:
    """Ratio of geometric means gm(a) / gm(b) with a 95% interval from Welch's interval of the
    difference of mean logs. For positive quantities (log-normal groups)."""
    a, b = finite(a), finite(b)
    iv = welch(np.log(a[a > 0]), np.log(b[b > 0]), level=level)
    exp = (lambda v: math.exp(v) if math.isfinite(v) else math.nan)
    return Interval(exp(iv.mean), exp(iv.low), exp(iv.high), iv.n, WELCH_LOG, iv.why)


# --- trends over batch sizes ----------------------------------------------------------------

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


# --- many trials, several means, few points -------------------------------------------------

def percentile_bootstrap(point: float, samples) -> Interval:
    """``point`` with the 2.5% and 97.5% quantiles of its bootstrap ``samples`` (NaN samples,
    failed refits, left out). For statistics of many independent trials (Efron & Tibshirani
    1993, ch. 13); with few values it under-covers and is not used."""
    samples = np.asarray(samples, float)
    samples = samples[~np.isnan(samples)]
    if len(samples) < 2:
        return none(point, len(samples), "no bootstrap resamples", PERCENTILE)
    low, high = np.quantile(samples, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(point, float(low), float(high), len(samples), PERCENTILE)


def simultaneous_t(values, family: int) -> Interval:
    """Mean of ``values`` with a t-interval at level 1 - 0.05/family (Bonferroni): when
    ``family`` intervals are read together, all cover their means with probability >= 95%."""
    x = finite(values)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return none(mean, n, "fewer than 2 trials", SIMULTANEOUS)
    _, low, high = mean_t_core(x, level=1 - (1 - LEVEL) / max(family, 1))
    return Interval(mean, float(low), float(high), n, SIMULTANEOUS)


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
