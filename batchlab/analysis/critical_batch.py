"""The critical batch size with intervals, and the noise scale that should predict it.

Builds on :mod:`batchlab.analysis.scaling` (steps to a target, best lr per B, the fit
S(B) = S_min (1 + B_crit / B)) and adds what a single fit does not give
(``science.md`` sections 4 and 7):

- bootstrap 95% intervals for B_crit and S_min: resample the seeds within each (B, lr),
  pick each B's best lr again among the settings where every seed reached the target, refit;
- the operational critical batch size (Zhang et al., ICLR 2025): the B at which the steps to
  the target exceed the perfect-scaling prediction S(B_0) B_0 / B by 20%;
- the simple noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) at the moment
  a run reaches the target, from exact checkpoint measurements and the online two-batch
  estimate, and its ratio to B_crit.

DataFrames in, DataFrames and numbers out; no engine, no JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchlab.analysis.findings import (AGREES, DISAGREES, INCONCLUSIVE, Interval, interval, interval_table,
                                        verdict_from_interval)
from batchlab.analysis.scaling import best_per_batch, fit_critical_batch, to_target
from batchlab.analysis.targets import Target
from batchlab.errors import BatchlabError


def runs_to_target(history: pd.DataFrame, summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """One row per run: group, B, lr, seed, status, and steps / samples / epochs / seconds to
    ``target`` (NaN when the run never reached it: a censored run, kept, not dropped)."""
    reached = to_target(history, target)
    table = summary[["run_id", "group", "batch_size", "lr", "seed", "status", "test_acc"]].merge(reached, on="run_id")
    table["reached"] = table["steps"].notna()
    return table


def per_batch(settings: pd.DataFrame) -> pd.DataFrame:
    """Each B at its best lr (:func:`best_per_batch`), with the share of seeds that reached the
    target at that lr and over all of that B's lrs, whether the best lr lies on the edge of the
    lr grid, and whether the B enters the fit (only if every seed of its best lr reached)."""
    best = best_per_batch(settings)
    lrs = np.sort(settings.lr.unique())
    share_all = settings.assign(hits=settings.reached * settings.seeds).groupby("batch_size").agg(
        hits=("hits", "sum"), runs=("seeds", "sum"))
    best["reached_any_lr"] = (share_all.hits / share_all.runs).reindex(best.batch_size).to_numpy()
    best["lr_edge"] = np.where(np.isclose(best.lr, lrs[-1]), "largest",
                               np.where(np.isclose(best.lr, lrs[0]), "smallest", ""))
    best["in_fit"] = best.reached == 1.0
    return best.sort_values("batch_size").reset_index(drop=True)


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


def within_factor(iv: Interval, factor: float) -> str:
    """Verdict on "the ratio lies within [1/factor, factor]": both bounds of the interval are
    checked by :func:`verdict_from_interval` on log10 scale (log10 r + log10 factor > 0 and
    log10 factor - log10 r > 0). Agrees when the whole interval lies inside, disagrees when it
    lies wholly outside on one side, inconclusive otherwise."""
    if not (iv.low > 0 and iv.high > 0 and math.isfinite(iv.high)):
        return INCONCLUSIVE
    limit = math.log10(factor)
    lo, hi = math.log10(iv.low), math.log10(iv.high)
    above_floor = verdict_from_interval(lo + limit, hi + limit, +1)
    below_ceiling = verdict_from_interval(limit - hi, limit - lo, +1)
    if DISAGREES in (above_floor, below_ceiling):
        return DISAGREES
    return AGREES if above_floor == below_ceiling == AGREES else INCONCLUSIVE


def noise_checkpoints(measurements: pd.DataFrame, instrument: str) -> pd.DataFrame:
    """The exact checkpoint records of ``instrument`` (one row per run and epoch)."""
    rows = measurements[measurements.instrument == instrument]
    keep = ["run_id", "group", "epoch", "grad_sq", "trace", "noise_scale", "pool"]
    return rows[[c for c in keep if c in rows]].sort_values(["run_id", "epoch"]).reset_index(drop=True)


def exact_band(exact: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint epoch: mean and 95% t-interval over runs of B_simple, |G|^2 and tr(Sigma)."""
    band = interval_table(exact, "epoch", ("noise_scale", "grad_sq", "trace"),
                          after=lambda group: {"runs": interval(group.trace).n})
    band.insert(4, "runs", band.pop("runs"))  # beside B_simple's columns, where the table has always had it
    return band


def value_at_epoch(exact: pd.DataFrame, crossing: pd.Series, key: str = "noise_scale") -> pd.Series:
    """Per run: ``key`` at the (fractional) epoch in ``crossing`` (indexed by run_id),
    interpolated linearly in log between the checkpoints around it; NaN outside them."""
    out = {}
    for run_id, epoch in crossing.items():
        run = exact[exact.run_id == run_id].sort_values("epoch")
        values = run[key].to_numpy(float)
        ok = np.isfinite(values) & (values > 0)
        if not np.isfinite(epoch) or ok.sum() < 1:
            out[run_id] = math.nan
            continue
        epochs = run.epoch.to_numpy(float)[ok]
        if epoch < epochs[0] or epoch > epochs[-1]:
            out[run_id] = math.nan
            continue
        out[run_id] = float(np.exp(np.interp(epoch, epochs, np.log(values[ok]))))
    return pd.Series(out, dtype=float)


def online_at_step(steps: pd.DataFrame, crossing: pd.Series, key: str = "noise_scale") -> pd.Series:
    """Per run: the per-step ``key`` at the last update before the (fractional) step in
    ``crossing``; NaN where the estimate is withheld there (its denominator not clearly > 0)."""
    out = {}
    for run_id, step in crossing.items():
        run = steps[steps.run_id == run_id]
        before = run[run.step <= step] if np.isfinite(step) else run.iloc[0:0]
        out[run_id] = float(before[key].iloc[-1]) if len(before) else math.nan
    return pd.Series(out, dtype=float)


def online_curve(steps: pd.DataFrame, every: int = 1) -> pd.DataFrame:
    """Per-step online estimate per run (every ``every``-th update, to keep the table small),
    with a fractional epoch (updates so far / updates per epoch)."""
    keep = ["run_id", "seed", "step", "epoch", "noise_scale", "noise_grad_sq", "noise_trace"]
    keep += [c for c in ("noise_grad_sq_se",) if c in steps]
    frame = steps[keep].copy()
    per_epoch = frame.groupby(["run_id", "epoch"]).step.transform("max") - frame.groupby(
        ["run_id", "epoch"]).step.transform("min") + 1
    first = frame.groupby(["run_id", "epoch"]).step.transform("min")
    frame["epoch_fraction"] = frame.epoch - 1 + (frame.step - first + 1) / per_epoch
    return frame[frame.step % every == 0].reset_index(drop=True)


def geometric_interval(values) -> Interval:
    """Geometric mean of the positive finite ``values`` with a 95% t-interval computed on the
    log scale (a noise scale is positive and spreads by factors, not by amounts)."""
    logs = np.log([v for v in np.asarray(values, float) if np.isfinite(v) and v > 0])
    iv = interval(logs)
    return Interval(math.exp(iv.mean) if iv.n else math.nan, math.exp(iv.low), math.exp(iv.high), iv.n)


def ratio_samples(b_simple, b_crit_boot: np.ndarray, seed: int = 0) -> np.ndarray:
    """Samples of B_simple / B_crit for a 95% interval: B_simple's geometric mean drawn from its
    t-distribution over runs (log scale: exp(mean log + se t_{n-1})), each divided by one
    bootstrap refit of B_crit. The two come from different runs, so they are drawn independently.
    A t draw, not a bootstrap, because there are few runs (a bootstrap of 3 values understates
    the spread); NaN samples with fewer than 2 runs."""
    from scipy import stats

    logs = np.log([v for v in np.asarray(b_simple, float) if np.isfinite(v) and v > 0])
    b_crit_boot = np.asarray(b_crit_boot, float)
    if len(logs) < 2:
        return np.full(len(b_crit_boot), np.nan)
    se = logs.std(ddof=1) / math.sqrt(len(logs))
    draws = stats.t.rvs(len(logs) - 1, size=len(b_crit_boot), random_state=np.random.default_rng(seed))
    return np.exp(logs.mean() + se * draws) / b_crit_boot


__all__ = ["runs_to_target", "per_batch", "operational_batch", "Bootstrap", "bootstrap_fit",
           "percentile_interval", "within_factor", "noise_checkpoints", "exact_band", "value_at_epoch",
           "online_at_step", "online_curve", "geometric_interval", "ratio_samples"]
