"""Findings: a source's claim, the measured numbers with 95% intervals, and a verdict.

A verdict is computed, never written by hand:
- ``agrees``: the interval of the measured contrast lies entirely on the claimed side (of zero,
  of a law's value, or inside an equivalence band);
- ``disagrees``: it lies entirely on the other side (or entirely outside the band);
- ``inconclusive``: it straddles, or a precondition of the claim is not met — too few seeds,
  no spread to estimate an interval from, the training set not fitted, unequal updates — in
  which case the finding says which (:attr:`Finding.reason`).

The intervals come from ``analysis/intervals.py``, where each method is documented with its
assumption and its coverage at the studies' sizes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from batchlab.analysis.intervals import Interval, mean_t, t_quantile, welch
from batchlab.analysis.trends import slope_t

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
PROPORTION = (0.0, 1.0)  # the range of an accuracy or a share
PROPORTION_DIFFERENCE = (-1.0, 1.0)
QUICK_LABEL = "quick size — indicative only"


@dataclass(frozen=True)
class Finding:
    """One claim of a source checked against this run's data. ``reason``: why no verdict could
    be reached (an unmet precondition, in words); empty when the interval decided."""

    claim: str  # what the source says, in our words
    source: str  # who says it
    measured: str  # the numbers from this study, with intervals
    verdict: str  # agrees | disagrees | inconclusive
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self, quick: bool = False) -> str:
        size = f" *({QUICK_LABEL})*" if quick else ""
        text = f"- **{self.verdict}**{size} — {self.claim} ({self.source}). Measured: {self.measured}"
        return text + (f" Not decided: {self.reason}." if self.reason else "")


def unmet(finding: Finding, reason: str) -> Finding:
    """``finding`` made inconclusive because ``reason`` (a precondition not met); '' keeps it."""
    if not reason:
        return finding
    return Finding(finding.claim, finding.source, finding.measured, INCONCLUSIVE, reason)


def no_interval_reason(*intervals: Interval) -> str:
    """Why the first of ``intervals`` without bounds has none ('' when all have bounds)."""
    return next((iv.why or f"{iv.n} value(s)" for iv in intervals if not iv.given), "")


def decided(claim: str, source: str, measured: str, verdict: str, *intervals: Interval) -> Finding:
    """A finding whose verdict came from ``intervals``; when one of them has no bounds, the
    verdict is inconclusive and the finding says why."""
    return unmet(Finding(claim, source, measured, verdict), no_interval_reason(*intervals))


def t_half_width(std: float, n: int, quantile: float = 0.975) -> float:
    """Half-width of a t-interval of a mean: t_{quantile, n-1} std / sqrt(n) (std with ddof 1)."""
    return float(t_quantile(n - 1, 2 * quantile - 1) * std / math.sqrt(n))


def interval(values: Iterable[float], bounds: tuple[float | None, float | None] = (None, None)) -> Interval:
    """Mean and 95% t-interval of the finite values (:func:`batchlab.analysis.intervals.mean_t`)."""
    return mean_t(list(values), bounds)


def proportion(values: Iterable[float]) -> Interval:
    """Mean of proportions (accuracies, shares) and its 95% t-interval kept within [0, 1]."""
    return mean_t(list(values), PROPORTION)


def interval_columns(name: str, iv: Interval) -> dict[str, float]:
    """An interval as three table columns: ``name`` (the estimate), ``name_low`` and ``name_high``."""
    return {name: iv.mean, f"{name}_low": iv.low, f"{name}_high": iv.high}


Method = Callable[[Sequence[float]], Interval]


def interval_table(frame: pd.DataFrame, by: str | Sequence[str], quantities: Iterable[str] | Mapping[str, Method], *,
                   before: Callable[[pd.DataFrame], dict] | None = None,
                   after: Callable[[pd.DataFrame], dict] | None = None, sort: bool = True) -> pd.DataFrame:
    """Estimate and 95% interval per group: one row per group of ``frame``'s rows that share ``by``.

    Columns, in this order: the group's ``by`` values; ``before(group)``; for each quantity q,
    its estimate and interval as ``q``, ``q_low``, ``q_high``; ``after(group)``.
    ``quantities``: names (each a mean with a t-interval, :func:`interval`) or a mapping from
    name to the interval method that fits it (``proportion``, ``geometric_t``, ...).
    ``sort``: groups in the order of their ``by`` values, else in the order they first appear.
    """
    methods = dict(quantities) if isinstance(quantities, Mapping) else {q: interval for q in quantities}
    keys = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, group in frame.groupby(by, sort=sort):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(before(group) if before else {})
        for name, method in methods.items():
            row.update(interval_columns(name, method(list(group[name]))))
        row.update(after(group) if after else {})
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_from_interval(low: float, high: float, claimed_sign: int) -> str:
    """Verdict for a contrast whose 95% interval is [low, high]; the claim says its sign."""
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if claimed_sign * low > 0 and claimed_sign * high > 0:
        return AGREES
    if claimed_sign * low < 0 and claimed_sign * high < 0:
        return DISAGREES
    return INCONCLUSIVE


def difference(a: Sequence[float], b: Sequence[float], bounds: tuple[float | None, float | None] = (None, None)
               ) -> Interval:
    """Mean of a minus mean of b, with Welch's 95% interval (:func:`batchlab.analysis.intervals.welch`)."""
    return welch(a, b, bounds)


def compare(a: Sequence[float], b: Sequence[float], claim: str,
            bounds: tuple[float | None, float | None] = (None, None)) -> tuple[Interval, str]:
    """Is mean(a) ``claim`` ('greater' or 'less') than mean(b)? Returns (a - b, verdict)."""
    diff = difference(a, b, bounds)
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


def non_inferior(a: Sequence[float], b: Sequence[float], margin: float,
                 bounds: tuple[float | None, float | None] = (None, None)) -> tuple[Interval, str]:
    """Is mean(a) > mean(b) - margin ("a is not worse than b by more than margin")?
    Returns (a - b, verdict): agrees when the Welch 95% interval of a - b lies above -margin,
    disagrees when it lies entirely below."""
    diff = difference(a, b, bounds)
    return diff, verdict_from_interval(diff.low + margin, diff.high + margin, 1)


def trend(xs: Sequence[float], groups: Sequence[Sequence[float]], claim: str, *, log_x: bool = True
          ) -> tuple[Interval, str]:
    """Does the mean of each group rise ('increasing') or fall ('decreasing') with x?

    The contrast is the least-squares slope of the group means against log2(x) (or x), with a
    95% t-interval and Welch-Satterthwaite degrees of freedom
    (:func:`batchlab.analysis.trends.slope_t`)."""
    iv = slope_t(xs, groups, log_x=log_x)
    return iv, verdict_from_interval(iv.low, iv.high, 1 if claim == "increasing" else -1)


def factor_trend(xs: Sequence[float], groups: Sequence[Sequence[float]], claim: str) -> tuple[Interval, str]:
    """:func:`trend` of a positive quantity on the log scale: the factor by which its geometric
    mean changes per doubling of x, 2^slope with slope that of log2(values) against log2(x)
    ('increasing' = factor above 1). A positive quantity spreads by factors, and one outlier
    on the raw scale can hide a clear trend (``science.md`` 7b)."""
    logs = [np.log2(v[v > 0]) for v in (np.asarray([u for u in g if math.isfinite(u)], float) for g in groups)]
    slope, verdict = trend(xs, logs, claim)
    return as_factor(slope), verdict


def as_factor(slope: Interval) -> Interval:
    """A slope of log2 values per doubling as the factor 2^slope per doubling."""
    def power(v: float) -> float:
        return 2.0 ** v if not math.isnan(v) else math.nan
    method = f"{slope.method}, on log2 values" if slope.method else ""
    return Interval(power(slope.mean), power(slope.low), power(slope.high), slope.n, method, slope.why)


def joint_verdict(verdicts: Sequence[str]) -> str:
    """A claim made of several parts (or holding at every B): agrees when every part agrees,
    disagrees when any part disagrees, inconclusive otherwise."""
    if verdicts and all(v == AGREES for v in verdicts):
        return AGREES
    return DISAGREES if DISAGREES in verdicts else INCONCLUSIVE
