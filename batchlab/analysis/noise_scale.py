"""The simple noise scale B_simple = tr(Sigma) / |G|^2 over training (McCandlish et al. 2018;
``science.md`` sections 4 and 7): exact checkpoint measurements and the online two-batch
estimate, read at the moment a run reaches a target, their geometric means and intervals, and
the ratio to the critical batch size.

DataFrames in, DataFrames and numbers out; no engine, no JAX.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.findings import AGREES, DISAGREES, INCONCLUSIVE, interval_table, verdict_from_interval
from batchlab.analysis.intervals import Interval, geometric_t


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
    """Per checkpoint epoch: geometric mean and 95% t-interval on the log scale over runs of
    B_simple, |G|^2 and tr(Sigma) (positive quantities: a t-interval of their raw values reached
    below zero)."""
    band = interval_table(exact, "epoch", {q: geometric_t for q in ("noise_scale", "grad_sq", "trace")},
                          after=lambda group: {"runs": int(group.trace.notna().sum())})
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
