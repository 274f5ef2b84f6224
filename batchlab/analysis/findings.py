"""Findings: a source's claim, the measured numbers with 95% intervals, and a verdict.

A verdict is computed, never written by hand:
- ``agrees``: the interval of the measured contrast lies entirely on the claimed side of zero;
- ``disagrees``: it lies entirely on the other side;
- ``inconclusive``: it contains zero, or there are too few seeds (fewer than 2 values in a
  group) to form an interval.
Intervals are 95% t-intervals of a mean over seeds (or trials), of a difference of means
(Welch), of a slope of group means (Welch-Satterthwaite), or percentile bootstrap intervals
for ratios.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
BOOTSTRAP = 2000


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its 95% interval [low, high] (NaN where n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return self.format()

    def format(self, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
        mean = f"{self.mean * scale:.{digits}g}"
        if self.n < 2 or not math.isfinite(self.low):
            return f"{mean}{unit} (n={self.n})"
        return f"{mean} [{self.low * scale:.{digits}g}, {self.high * scale:.{digits}g}]{unit}"


@dataclass(frozen=True)
class Finding:
    """One claim of a source checked against this run's data."""

    claim: str  # what the source says, in our words
    source: str  # who says it
    measured: str  # the numbers from this study, with intervals
    verdict: str  # agrees | disagrees | inconclusive

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        return f"- **{self.verdict}** — {self.claim} ({self.source}). Measured: {self.measured}"


def t_half_width(std: float, n: int, quantile: float = 0.975) -> float:
    """Half-width of a t-interval of a mean: t_{quantile, n-1} std / sqrt(n) (std with ddof 1).

    Every t-interval of a mean in batchlab is computed here (0.975: a 95% interval)."""
    from scipy import stats

    return float(stats.t.ppf(quantile, n - 1) * std / math.sqrt(n))


def interval(values: Iterable[float]) -> Interval:
    """Mean and 95% t-interval of the finite values: mean +- t_{0.975, n-1} s / sqrt(n)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    n = len(arr)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(arr.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t_half_width(arr.std(ddof=1), n)
    return Interval(mean, mean - half, mean + half, n)


def interval_columns(name: str, iv: Interval) -> dict[str, float]:
    """An interval as three table columns: ``name`` (the mean), ``name_low`` and ``name_high``."""
    return {name: iv.mean, f"{name}_low": iv.low, f"{name}_high": iv.high}


def interval_table(frame: pd.DataFrame, by: str | Sequence[str], quantities: Iterable[str], *,
                   before: Callable[[pd.DataFrame], dict] | None = None,
                   after: Callable[[pd.DataFrame], dict] | None = None, sort: bool = True) -> pd.DataFrame:
    """Mean and 95% interval per group: one row per group of ``frame``'s rows that share ``by``.

    Columns, in this order: the group's ``by`` values; ``before(group)``; for each quantity q,
    the mean of the group's finite values of q and its 95% t-interval (:func:`interval`) as
    ``q``, ``q_low``, ``q_high``; ``after(group)``. ``sort``: groups in the order of their
    ``by`` values, else in the order they first appear.
    """
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, group in frame.groupby(by, sort=sort):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(before(group) if before else {})
        for name in quantities:
            row.update(interval_columns(name, interval(group[name])))
        row.update(after(group) if after else {})
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_from_interval(low: float, high: float, claimed_sign: int) -> str:
    """Verdict for a contrast whose 95% interval is [low, high]; the claim says its sign."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    if claimed_sign * low > 0 and claimed_sign * high > 0:
        return AGREES
    if claimed_sign * low < 0 and claimed_sign * high < 0:
        return DISAGREES
    return INCONCLUSIVE


def difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """Mean of a minus mean of b, with a Welch 95% interval (NaN if either has < 2 values)."""
    from scipy import stats

    a = np.asarray([v for v in a if math.isfinite(v)], float)
    b = np.asarray([v for v in b if math.isfinite(v)], float)
    if len(a) == 0 or len(b) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, math.nan, math.nan, min(len(a), len(b)))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(diff, diff, diff, min(len(a), len(b)))
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof) * se)
    return Interval(diff, diff - half, diff + half, min(len(a), len(b)))


def compare(a: Sequence[float], b: Sequence[float], claim: str) -> tuple[Interval, str]:
    """Is mean(a) ``claim`` ('greater' or 'less') than mean(b)? Returns (a - b, verdict)."""
    diff = difference(a, b)
    return diff, verdict_from_interval(diff.low, diff.high, 1 if claim == "greater" else -1)


def within(iv: Interval, low: float, high: float) -> str:
    """Verdict for an equivalence claim "the contrast lies in [low, high]" (two one-sided
    tests, Schuirmann 1987, read off the same 95% interval): ``agrees`` when the whole interval
    lies inside, ``disagrees`` when it lies entirely outside, ``inconclusive`` otherwise."""
    above = verdict_from_interval(iv.low - low, iv.high - low, 1)
    below = verdict_from_interval(iv.low - high, iv.high - high, -1)
    if above == AGREES and below == AGREES:
        return AGREES
    if DISAGREES in (above, below):
        return DISAGREES
    return INCONCLUSIVE


def non_inferior(a: Sequence[float], b: Sequence[float], margin: float) -> tuple[Interval, str]:
    """Is mean(a) > mean(b) - margin ("a is not worse than b by more than margin")?
    Returns (a - b, verdict): agrees when the Welch 95% interval of a - b lies above -margin,
    disagrees when it lies entirely below."""
    diff = difference(a, b)
    return diff, verdict_from_interval(diff.low + margin, diff.high + margin, 1)


def trend(xs: Sequence[float], groups: Sequence[Sequence[float]], claim: str, *, log_x: bool = True) -> tuple[Interval, str]:
    """Does the mean of each group rise ('increasing') or fall ('decreasing') with x?

    The contrast is the least-squares slope of the group means against log2(x) (or x):
    slope = sum_k c_k mean_k with c_k = (x_k - xbar) / sum (x - xbar)^2. Its standard error is
    sqrt(sum_k c_k^2 s_k^2 / n_k) (groups independent) and its 95% interval uses Student's t
    with Welch-Satterthwaite degrees of freedom. Every group needs at least 2 values, or the
    verdict is inconclusive.
    """
    from scipy import stats

    x = np.log2(np.asarray(xs, float)) if log_x else np.asarray(xs, float)
    values = [np.asarray([v for v in g if math.isfinite(v)], float) for g in groups]
    keep = [len(v) > 0 for v in values]
    x, values = x[keep], [v for v, k in zip(values, keep) if k]
    if len(values) < 2 or np.ptp(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0), INCONCLUSIVE
    xc = x - x.mean()
    c = xc / (xc @ xc)
    slope = float(c @ np.array([v.mean() for v in values]))
    n = min(len(v) for v in values)
    if n < 2:
        return Interval(slope, math.nan, math.nan, n), INCONCLUSIVE
    parts = np.array([ck ** 2 * v.var(ddof=1) / len(v) for ck, v in zip(c, values)])
    se = math.sqrt(parts.sum())
    if se == 0:
        iv = Interval(slope, slope, slope, n)
    else:
        dof = parts.sum() ** 2 / sum(p ** 2 / (len(v) - 1) for p, v in zip(parts, values) if p > 0)
        half = float(stats.t.ppf(0.975, dof) * se)
        iv = Interval(slope, slope - half, slope + half, n)
    return iv, verdict_from_interval(iv.low, iv.high, 1 if claim == "increasing" else -1)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], seed: int = 0) -> Interval:
    """mean(a) / mean(b) with a percentile bootstrap 95% interval (resampling a and b)."""
    a = np.asarray([v for v in a if math.isfinite(v)], float)
    b = np.asarray([v for v in b if math.isfinite(v)], float)
    if len(a) == 0 or len(b) == 0 or b.mean() == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    ratio = float(a.mean() / b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(ratio, math.nan, math.nan, min(len(a), len(b)))
    rng = np.random.default_rng(seed)
    ra = a[rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))].mean(axis=1)
    rb = b[rng.integers(0, len(b), size=(BOOTSTRAP, len(b)))].mean(axis=1)
    low, high = np.quantile(ra / rb, [0.025, 0.975])
    return Interval(ratio, float(low), float(high), min(len(a), len(b)))
