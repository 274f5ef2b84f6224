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

from batchlab.analysis.findings import (AGREES, INCONCLUSIVE, Finding, decided, factor_trend, interval_table,
                                        joint_verdict, unmet, verdict_from_interval)
from batchlab.analysis.intervals import Interval, geometric_t
from batchlab.analysis.scaling import to_target
from batchlab.analysis.selection import best_versus
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
    """Per B: geometric mean and 95% t-interval on the log scale over seeds of throughput,
    seconds per update and per epoch, and time / steps to target (over the seeds that reached
    it; all positive, so their intervals stay above zero), the share that reached it, and
    compile time (mean and max over the seeds' cohorts)."""
    return interval_table(
        runs, "batch_size", {q: geometric_t for q in ("throughput", "seconds_per_step", "seconds_per_epoch",
                                                      "seconds_to_target", "steps_to_target")},
        before=lambda group: {"lr": group.lr.iloc[0], "seeds": len(group),
                              "reached": float(group.seconds_to_target.notna().mean()),
                              "compile_seconds": group.compile_seconds.mean(),
                              "compile_seconds_max": group.compile_seconds.max()})


def fastest_batch(runs: pd.DataFrame, resamples: int = 1000, seed: int = 0) -> dict:
    """The B with the least geometric-mean time to target, among the B where every seed reached
    it (with a clock of its own), and how stable that choice is (descriptive): the share of seed
    resamples within each B that pick the same B, and the range of the picked B."""
    eligible = runs.groupby("batch_size").seconds_to_target.apply(lambda v: v.notna().all())
    sizes = [int(b) for b in eligible.index[eligible]]
    if not sizes:
        return {"batch_size": math.nan, "stable_share": math.nan, "low": math.nan, "high": math.nan,
                "excluded_sizes": ",".join(str(int(b)) for b in eligible.index)}
    values = [np.log(runs[runs.batch_size == b].seconds_to_target.to_numpy(float)) for b in sizes]
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
    factor, verdict = factor_trend(sizes, [runs[runs.batch_size == b].throughput for b in sizes], "increasing")
    low, high = table.throughput.iloc[0], table.throughput.iloc[-1]
    out = [decided("training throughput (samples per second) grows with the batch size", SOURCE,
                   f"throughput changes by a factor {factor.format(3)} per doubling of B over B in {sizes} (95% "
                   f"{factor.method}); {low:,.0f} samples/s at B={sizes[0]}, {high:,.0f} at B={sizes[-1]} "
                   f"({high / low:.3g}x; geometric means)", verdict, factor)]
    out.append(_minimum_finding(runs, fastest, s))
    return out


def _minimum_finding(runs: pd.DataFrame, fastest: pd.Series, s: dict) -> Finding:
    """Interior minimum: the fastest B is faster than both ends of the grid.

    At each end, the ratio of its time to the fastest candidate's (geometric means) has a Welch
    interval on the log scale at level 1 - 0.05/m, m the batch sizes the fastest was chosen from
    (:func:`batchlab.analysis.selection.best_versus`): the choice is accounted for. An end where
    some seed never reached the target is slower than any time measured. A fastest B at an end
    of the grid is no interior minimum."""
    claim = f"the time to reach {s['target']} has a minimum at an intermediate batch size"
    if not math.isfinite(fastest.batch_size):
        return Finding(claim, SOURCE, "no batch size had every seed reach the target", INCONCLUSIVE,
                       "no batch size had every seed reach the target with a clock of its own")
    excluded = [int(x) for x in str(fastest.excluded_sizes).split(",") if x]
    times = {int(b): group.seconds_to_target.to_numpy(float) for b, group in runs.groupby("batch_size")}
    ends = [min(times), max(times)]
    parts, verdicts, ratios = [], [], []
    for end in ends:
        if np.isnan(times[end]).any():
            parts.append(f"B={end} did not always reach it")
            verdicts.append(AGREES)
            continue
        candidates = {b: t for b, t in times.items() if b not in excluded and b != end}
        best, ratio = best_versus({**candidates, "end": times[end]}, "end", higher_is_better=False, ratio=True)
        ratio = Interval(1 / ratio.mean, 1 / ratio.high, 1 / ratio.low, ratio.n, ratio.method, ratio.why)
        parts.append(f"B={end} takes {ratio.format(3)} × the time of B={best}")
        ratios.append(ratio)
        verdicts.append(verdict_from_interval(math.log(ratio.low), math.log(ratio.high), +1)
                        if ratio.given and ratio.low > 0 else INCONCLUSIVE)
    at = geometric_t(times[int(fastest.batch_size)])
    finding = decided(claim, SOURCE,
                      f"fastest B={fastest.batch_size:.0f}: {at.format(3)} s (geometric mean, 95% t on the log scale); "
                      f"{'; '.join(parts)} ({ratios[0].method if ratios else 'no interval'})",
                      joint_verdict(verdicts), *ratios)
    if int(fastest.batch_size) in ends:
        return unmet(finding, f"the fastest B ({fastest.batch_size:.0f}) is at the edge of the grid: no interior "
                              "minimum can be shown")
    return finding


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
        "The lr is not tuned per B: it follows the square-root rule lr = lr_ref √(B / ref_batch), so the "
        "updates to the target mix the rule's fit at each B with the batch size itself (the critical-batch "
        "study tunes lr per B). Time to target = updates to target × seconds per update.",
    ]
    if tables["fastest"].iloc[0].excluded_sizes:
        out.append(f"Left out of the fastest-B choice (a seed never reached the target, or its clock was shared): "
                   f"B={tables['fastest'].iloc[0].excluded_sizes}.")
    return out
