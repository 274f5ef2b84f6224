"""Throughput and time to a target per batch size, from runs that each trained alone.

A run's stored ``train_seconds`` is its whole cohort's training time (compilation excluded);
it is the run's own only when the cohort held that one run, so the throughput study trains
every (B, seed) as its own cohort. Then, per run:

- throughput = samples_seen / train_seconds (training samples per second; the time includes
  the evaluation pass after every epoch and the host's bookkeeping, as a user experiences it);
- seconds per update = train_seconds / steps; seconds per epoch = train_seconds / epochs;
- time to target = the history's ``wall_time`` (seconds since training started, compilation
  excluded) at the first crossing, interpolated between epochs (:func:`to_target`).

DataFrames in, DataFrames out; no engine, no JAX. The throughput study's tables and findings
(``studies/throughput.py`` declares the runs).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.findings import (AGREES, DISAGREES, INCONCLUSIVE, Finding, compare, interval, interval_table,
                                        trend)
from batchlab.analysis.scaling import to_target
from batchlab.analysis.study_data import StudyData
from batchlab.targets import Target, parse_target

SOURCE = "the data-parallelism argument for large batches (Goyal et al. 2017; Shallue et al. 2019)"


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


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data.history, data.summary, parse_target(s["target"]))
    return {"runs": runs, "per_batch": per_batch(runs),
            "fastest": pd.DataFrame([fastest_batch(runs, s["resamples"])])}


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, table, fastest = tables["runs"], tables["per_batch"], tables["fastest"].iloc[0]
    sizes = [int(b) for b in table.batch_size]
    slope, verdict = trend(sizes, [runs[runs.batch_size == b].throughput for b in sizes], "increasing")
    low, high = table.throughput.iloc[0], table.throughput.iloc[-1]
    out = [Finding("training throughput (samples per second) grows with the batch size", SOURCE,
                   f"slope {slope.format(3)} samples/s per doubling of B over B in {sizes}; "
                   f"{low:,.0f} samples/s at B={sizes[0]}, {high:,.0f} at B={sizes[-1]} "
                   f"({high / low:.3g}x)", verdict)]
    out.append(_minimum_finding(runs, fastest, s))
    return out


def _minimum_finding(runs: pd.DataFrame, fastest: pd.Series, s: dict) -> Finding:
    """Interior minimum: the fastest B is significantly faster than both ends of the grid."""
    claim = f"the time to reach {s['target']} has a minimum at an intermediate batch size"
    if not math.isfinite(fastest.batch_size):
        return Finding(claim, SOURCE, "no batch size had every seed reach the target", INCONCLUSIVE)
    times = runs.groupby("batch_size").seconds_to_target
    best = times.get_group(fastest.batch_size)
    ends = [b for b in (runs.batch_size.min(), runs.batch_size.max())]
    parts, verdicts = [], []
    for b in ends:
        # A B where some seed never reached the target is slower than any time measured: inf.
        other = times.get_group(b).fillna(math.inf)
        if other.isin([math.inf]).any():
            parts.append(f"B={b} did not always reach it")
            verdicts.append(AGREES)
            continue
        diff, verdict = compare(other, best, "greater")
        parts.append(f"B={b} is {diff.format(3)} s slower")
        verdicts.append(verdict)
    verdict = AGREES if all(v == AGREES for v in verdicts) else DISAGREES if DISAGREES in verdicts else INCONCLUSIVE
    at = interval(best)
    edge = " (at the edge of the grid: no interior minimum found)" if fastest.batch_size in ends else ""
    return Finding(claim, SOURCE,
                   f"fastest B={fastest.batch_size:.0f}{edge}: {at.format(3)} s (95% t over seeds); picked by "
                   f"{fastest.stable_share:.0%} of seed resamples, 95% range B in [{fastest.low:.0f}, "
                   f"{fastest.high:.0f}]; {'; '.join(parts)}", verdict)


def _updates_per_epoch(runs: pd.DataFrame, b: int) -> int:
    run = runs[runs.batch_size == b].iloc[0]
    return int(round(run.steps / run.epochs_done))


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    table, runs = tables["per_batch"], tables["runs"]
    small, large = table.iloc[0], table.iloc[-1]
    out = [
        "Timings depend on this machine and on its load while the runs trained (other processes share the "
        "CPU cores); rerun on an idle machine before comparing numbers across machines. Each (B, seed) trained "
        "alone as its own compiled program, so its training seconds are its own; compile time is excluded from "
        "throughput and time to target and shown separately.",
        "Compile times: the first program of each shape is compiled, later ones (other seeds, or a rerun) may "
        "load from JAX's persistent compilation cache, so they can be far shorter: "
        + ", ".join(f"B={int(b)}: {lo:.2g}..{hi:.2g} s" for b, lo, hi in zip(
            table.batch_size, runs.groupby("batch_size").compile_seconds.min(), table.compile_seconds_max)) + ".",
        f"Training seconds include the evaluation pass over the training and test sets after every epoch and "
        f"the host's bookkeeping. Per epoch that costs the same at every B, so it weighs most where an epoch "
        f"has few updates: at B={int(large.batch_size)} an epoch ({_updates_per_epoch(runs, large.batch_size)} "
        f"update(s)) takes {large.seconds_per_epoch:.3g} s, at B={int(small.batch_size)} "
        f"({_updates_per_epoch(runs, small.batch_size)} updates) {small.seconds_per_epoch:.3g} s.",
        "The lr is not tuned per B: it follows the square-root rule lr = lr_ref sqrt(B / ref_batch), so the "
        "updates to the target mix the rule's fit at each B with the batch size itself (the critical-batch "
        "study tunes lr per B). Time to target = updates to target x seconds per update.",
    ]
    if tables["fastest"].iloc[0].excluded_sizes:
        out.append(f"Left out of the fastest-B choice (a seed never reached the target, or its clock was shared): "
                   f"B={tables['fastest'].iloc[0].excluded_sizes}.")
    return out
