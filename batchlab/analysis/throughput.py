"""Throughput and time to a target per batch size, from runs that each trained alone.

A run's stored ``train_seconds`` is its whole cohort's training time (compilation excluded);
it is the run's own only when the cohort held that one run, so the throughput study trains
every (B, seed) as its own cohort. Then, per run:

- throughput = samples_seen / train_seconds (training samples per second; the time includes
  the evaluation pass after every epoch and the host's bookkeeping, as a user experiences it);
- seconds per update = train_seconds / steps; seconds per epoch = train_seconds / epochs;
- time to target = the history's ``wall_time`` (seconds since training started, compilation
  excluded) at the first crossing, interpolated between epochs (:func:`to_target`).

DataFrames in, DataFrames out; no engine, no JAX.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.findings import interval_table
from batchlab.analysis.scaling import to_target
from batchlab.analysis.targets import Target


def per_run(history: pd.DataFrame, summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """One row per run: B, seed, lr, throughput, compile and per-update times, and the steps,
    samples and seconds to ``target`` (NaN when never reached: censored, kept)."""
    table = summary[["run_id", "group", "batch_size", "lr", "seed", "status", "samples_seen", "steps",
                     "epochs_done", "train_seconds", "compile_seconds"]].copy()
    # Runs trained together (read back from an earlier cohort) share one clock, so equal
    # timings to the last digit: their times are not their own and are left out (NaN).
    shared = summary.groupby(["batch_size", "compile_seconds", "train_seconds"]).run_id.transform("count") > 1
    table["shared_clock"] = shared.to_numpy()
    own = table.train_seconds.where(~table.shared_clock)
    table["throughput"] = table.samples_seen / own
    table["seconds_per_step"] = own / table.steps
    table["seconds_per_epoch"] = own / table.epochs_done
    reached = to_target(history, target).rename(columns={"steps": "steps_to_target", "samples": "samples_to_target",
                                                         "epochs": "epochs_to_target", "seconds": "seconds_to_target"})
    table = table.merge(reached, on="run_id")
    table.loc[table.shared_clock, "seconds_to_target"] = math.nan
    return table


def per_batch(runs: pd.DataFrame) -> pd.DataFrame:
    """Per B: mean and 95% t-interval over seeds of throughput, seconds per update and per
    epoch, and time / steps to target (over the seeds that reached it), the share that
    reached it, and compile time (mean and max over the seeds' cohorts)."""
    return interval_table(
        runs, "batch_size", ("throughput", "seconds_per_step", "seconds_per_epoch", "seconds_to_target",
                             "steps_to_target"),
        before=lambda group: {"lr": group.lr.iloc[0], "seeds": len(group),
                              "reached": float(group.seconds_to_target.notna().mean()),
                              "compile_seconds": group.compile_seconds.mean(),
                              "compile_seconds_max": group.compile_seconds.max()})


def fastest_batch(runs: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict:
    """The B with the least mean time to target, among the B where every seed reached it (with a clock of its own), and
    how stable that choice is: resampling the seeds within each B, the share of resamples that
    pick the same B and the 2.5%..97.5% range of the picked B."""
    eligible = runs.groupby("batch_size").seconds_to_target.apply(lambda v: v.notna().all())
    sizes = [int(b) for b in eligible.index[eligible]]
    if not sizes:
        return {"batch_size": math.nan, "stable_share": math.nan, "low": math.nan, "high": math.nan,
                "excluded_sizes": ",".join(str(int(b)) for b in eligible.index)}
    values = [runs[runs.batch_size == b].seconds_to_target.to_numpy(float) for b in sizes]
    best = sizes[int(np.argmin([v.mean() for v in values]))]
    rng = np.random.default_rng(seed)
    means = np.stack([v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1) for v in values], axis=1)
    picks = np.asarray(sizes)[np.argmin(means, axis=1)]
    low, high = np.quantile(np.log2(picks), [0.025, 0.975])
    return {"batch_size": best, "stable_share": float(np.mean(picks == best)), "low": float(2 ** low),
            "high": float(2 ** high), "excluded_sizes": ",".join(str(int(b)) for b in eligible.index[~eligible])}


__all__ = ["per_run", "per_batch", "fastest_batch"]
