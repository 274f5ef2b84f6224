"""Throughput: samples per second and time to a target vs batch size, on this machine.

The parallelism claim behind large batches: a bigger batch does more work per update in
parallel, so samples per second grow with B; but it also needs more samples to reach a target
(``critical-batch``), so the time to the target has a minimum somewhere. Digits (1437 train),
MLP 256-256(relu)-10 (Shen's width: enough work per update that compute, not overhead, is
timed), SGD momentum 0.9, the lr following the square-root rule lr = lr_ref sqrt(B /
ref_batch) (Hoffer et al. 2017; not tuned per B), the partial last batch dropped. Every
run trains as its own cohort (``Grid.alone``), so each run's ``train_seconds`` is its own
clock; every run trains the same number of epochs, long enough that each timing spans a
fraction of a second rather than a few milliseconds.
"""

from __future__ import annotations

import math

import pandas as pd

from batchlab import budget
from batchlab.analysis.findings import AGREES, DISAGREES, INCONCLUSIVE, Finding, compare, interval, trend
from batchlab.analysis.targets import parse_target
from batchlab.analysis.throughput import fastest_batch, per_batch, per_run
from batchlab.studies.base import FigureSpec, Grid, Study, StudyData

SOURCE = "the data-parallelism argument for large batches (Goyal et al. 2017; Shallue et al. 2019)"


def lr_for(b: int, s: dict) -> float:
    """Square-root scaling from the reference batch size (``science.md`` section 4)."""
    return round(budget.scaled_lr("sqrt", s["lr_ref"], s["ref_batch"], b), 6)


def grids(s: dict) -> list[Grid]:
    return [Grid(f"B={b}", dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), momentum=s["momentum"],
                                batch_size=b, lr=lr_for(b, s), seeds=s["seeds"], epochs=s["epochs"], drop_last=True),
                 alone=True)
            for b in sorted(s["batch_sizes"])]


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


def _title(s: dict) -> str:
    return (f"{s['data']} MLP {'-'.join(str(h) for h in s['hidden'])}, SGD momentum {s['momentum']:g}, lr = "
            f"{s['lr_ref']:g} sqrt(B/{s['ref_batch']}), {s['seeds']} seeds, one run per compiled program")


def _throughput(tables, s):
    from batchlab.plots.throughput import throughput_figure

    return throughput_figure(tables["per_batch"], tables["runs"], _title(s))


def _time_to_target(tables, s):
    from batchlab.plots.throughput import time_to_target_figure

    return time_to_target_figure(tables["per_batch"], tables["fastest"].iloc[0], s["target"], _title(s))


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


STUDY = Study(
    name="throughput",
    question="How do samples per second and the time to a target change with the batch size on this machine?",
    source=SOURCE,
    defaults=dict(data="digits", hidden=(256, 256), momentum=0.9, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024),
                  seeds=3, lr_ref=0.1, ref_batch=64, target="train_loss<=0.1", epochs=30,
                  resamples=1000),
    quick=dict(batch_sizes=(32, 128, 512), seeds=2, epochs=15),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("throughput_vs_batch", _throughput, "per_batch"),
             FigureSpec("time_to_target_vs_batch", _time_to_target, "per_batch")),
    findings=findings,
    notes=notes,
    minutes=(0.7, 0.3),
)
