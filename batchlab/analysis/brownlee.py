"""The brownlee study's analysis: when each run first reaches the threshold, how much its test
accuracy jitters late in training and where it ends; their means and 95% intervals per setting;
the findings against Brownlee (2019) (``studies/brownlee.py`` declares the runs)."""

from __future__ import annotations

import pandas as pd

from batchlab import budget
from batchlab.analysis.curves import curves_table, first_reaching, late_mean, late_variability
from batchlab.analysis.findings import (PROPORTION_DIFFERENCE, Finding, compare, decided, factor_trend, interval,
                                        interval_table, proportion, trend)
from batchlab.analysis.intervals import geometric_t
from batchlab.analysis.study_data import StudyData

SOURCE = "Brownlee, How to Control the Stability of Training Neural Networks With the Batch Size (2019)"
# The article's four runs: (group label, B, lr).
FOUR = (("batch GD, B=500", 500, 0.01), ("SGD, B=1, lr=0.01", 1, 0.01), ("SGD, B=1, lr=0.001", 1, 0.001),
        ("mini-batch, B=32", 32, 0.01))
SWEEP = "sweep"  # the group of the sweep over B


def quantities(s: dict) -> dict:
    """Each per-run quantity with the interval that respects its range: accuracies in [0, 1],
    the epoch of first reaching the threshold in [0, epochs], the jitter (a positive spread)
    on the log scale."""
    return {"train_acc": proportion, "test_acc": proportion,
            "epoch_to_threshold": lambda v: interval(v, (0, s["epochs"])), "late_jitter": geometric_t,
            "late_test_acc": proportion}


def per_run(data: StudyData, s: dict) -> pd.DataFrame:
    """One row per run: group, B, lr, final accuracies, epoch to the threshold, late jitter."""
    runs = data.summary.set_index("run_id")
    table = runs[["group", "batch_size", "lr", "seed", "train_acc", "test_acc"]].copy()
    table["epoch_to_threshold"] = first_reaching(data.history, "test_acc", s["threshold"])
    table["late_jitter"] = late_variability(data.history, "test_acc", s["last_epochs"])
    table["late_test_acc"] = late_mean(data.history, "test_acc", s["last_epochs"])
    return table.reset_index()


def by_setting(runs: pd.DataFrame, key: list[str], s: dict) -> pd.DataFrame:
    """Estimate and 95% interval over seeds of each per-run quantity (:func:`quantities`), and
    the share of seeds that reached the threshold, per setting ``key``."""
    return interval_table(runs, key, quantities(s), before=lambda group: {"seeds": len(group)},
                          after=lambda group: {"reached": float(group.epoch_to_threshold.notna().mean())},
                          sort=False)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data, s)
    four = runs[runs.group != SWEEP]
    sweep = runs[runs.group == SWEEP]
    history = data.history
    return {
        "runs": runs,
        "summary": by_setting(four, ["group", "batch_size", "lr"], s),
        "sweep": by_setting(sweep, ["batch_size"], s).sort_values("batch_size"),
        "curves": curves_table(history[history.group != SWEEP], ["group"]),
        "sweep_curves": curves_table(history[history.group == SWEEP], ["batch_size"], ("acc",)),
    }


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, sweep = tables["runs"], tables["runs"][tables["runs"].group == SWEEP]
    sizes = sorted(int(b) for b in sweep.batch_size.unique())
    threshold = f"{s['threshold']:.0%}"
    # A run that never reaches the threshold counts as reaching it after the last epoch.
    reach = [sweep[sweep.batch_size == b].epoch_to_threshold.fillna(s["epochs"] + 1) for b in sizes]
    slope, verdict = trend(sizes, reach, "increasing")
    out = [decided(f"the epoch at which test accuracy first reaches {threshold} grows with B", SOURCE,
                   f"slope {slope.format(3)} epochs per doubling of B over B in {sizes} "
                   f"(never reached counted as epoch {s['epochs'] + 1}; 95% {slope.method})", verdict, slope)]
    jitter = [sweep[sweep.batch_size == b].late_jitter for b in sizes]
    factor, verdict = factor_trend(sizes, jitter, "decreasing")
    out.append(decided(f"test accuracy jitters less over the last {s['last_epochs']} epochs as B grows", SOURCE,
                       f"the jitter (std of the epoch-to-epoch change) changes by a factor {factor.format(3)} per "
                       f"doubling of B (geometric means; 95% {factor.method}); "
                       + ", ".join(f"B={b}: {geometric_t(j).format(3)}" for b, j in zip(sizes, jitter)),
                       verdict, factor))
    fast, b32 = runs[runs.group == FOUR[1][0]], runs[runs.group == FOUR[3][0]]
    # Where a run ends: its mean over the last epochs, since B=1 at lr 0.01 jumps by 10-30
    # points from epoch to epoch and a final epoch alone is a lottery ticket.
    last = s["last_epochs"]
    diff, verdict = compare(fast.late_test_acc, b32.late_test_acc, "less", PROPORTION_DIFFERENCE)
    out.append(decided("B=1 at lr 0.01 ends clearly below B=32 (lr too large for B=1)", SOURCE,
                       f"mean test acc over the last {last} epochs, B=1 lr 0.01: "
                       f"{proportion(fast.late_test_acc).format(3)}, B=32: {proportion(b32.late_test_acc).format(3)}; "
                       f"difference {diff.format(3)} (95% {diff.method})", verdict, diff))
    return out


def notes(tables, s: dict) -> list[str]:
    n, epochs = 500, s["epochs"]
    gd, sgd = budget.plan(n, n, epochs), budget.plan(n, 1, epochs)
    early = min(25, epochs)
    return [f"In {epochs} epochs batch gradient descent (B={n}) makes {gd.total_steps:,} updates while "
            f"stochastic gradient descent (B=1) makes {sgd.total_steps:,}; after {early} epochs, "
            f"{budget.plan(n, n, early).total_steps:,} against {budget.plan(n, 1, early).total_steps:,}. "
            "More updates per epoch is why small batches learn fast in epochs, and noisier updates why "
            "they jitter."]
