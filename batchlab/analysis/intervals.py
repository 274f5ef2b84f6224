"""Every 95% interval a finding states: one function per method, each with its assumption.

A study has few seeds (2-5), so a method is only used where its coverage was checked by
simulation at those sizes (``tests/test_intervals.py`` in the suite,
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

The trends over batch sizes (:func:`slope_t`, :func:`log_spread_slope`) and the rank test
(:func:`spearman_permutation`) are in ``analysis/trends.py``.

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


# --- many trials, several means -------------------------------------------------

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
