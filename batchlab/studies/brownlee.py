"""Brownlee (2019): batch size controls the stability of training (``science.md`` section 2).

Blobs (500 train / 500 test), MLP 2-50(relu, he_uniform)-3, SGD lr 0.01 momentum 0.9,
200 epochs, reshuffled each epoch, batch-mean cross-entropy. The four runs of the article
(batch GD B=500, SGD at lr 0.01 and 0.001, mini-batch B=32) and its sweep B in
{4, ..., 450} at lr 0.01, over seeds. Measured: when test accuracy first reaches 80%, how
much it jitters over the last 50 epochs, and where each run ends.
"""

from __future__ import annotations

import pandas as pd

from batchlab import budget
from batchlab.analysis.curves import curves_table, first_reaching, late_mean, late_variability
from batchlab.analysis.findings import Finding, compare, interval, trend
from batchlab.studies.base import FigureSpec, Grid, Study, StudyData

SOURCE = "Brownlee, How to Control the Stability of Training Neural Networks With the Batch Size (2019)"
FOUR = (("batch GD, B=500", 500, 0.01), ("SGD, B=1, lr=0.01", 1, 0.01), ("SGD, B=1, lr=0.001", 1, 0.001),
        ("mini-batch, B=32", 32, 0.01))


def grids(s: dict) -> list[Grid]:
    common = dict(data="blobs", model="mlp", hidden=(50,), epochs=s["epochs"], momentum=0.9, seeds=s["seeds"])
    runs = [Grid(label, dict(common, batch_size=b, lr=lr)) for label, b, lr in FOUR]
    return runs + [Grid("sweep", dict(common, batch_size=list(s["sweep_batch_sizes"]), lr=s["sweep_lr"]))]


def per_run(data: StudyData, s: dict) -> pd.DataFrame:
    """One row per run: group, B, lr, final accuracies, epoch to the threshold, late jitter."""
    runs = data.summary.set_index("run_id")
    table = runs[["group", "batch_size", "lr", "seed", "train_acc", "test_acc"]].copy()
    table["epoch_to_threshold"] = first_reaching(data.history, "test_acc", s["threshold"])
    table["late_jitter"] = late_variability(data.history, "test_acc", s["last_epochs"])
    table["late_test_acc"] = late_mean(data.history, "test_acc", s["last_epochs"])
    return table.reset_index()


def by_setting(runs: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Mean and 95% interval over seeds of each per-run quantity."""
    rows = []
    for values, group in runs.groupby(key, sort=False):
        row = dict(zip(key, values if isinstance(values, tuple) else (values,)), seeds=len(group))
        for name in ("train_acc", "test_acc", "epoch_to_threshold", "late_jitter", "late_test_acc"):
            iv = interval(group[name])
            row.update({name: iv.mean, f"{name}_low": iv.low, f"{name}_high": iv.high})
        row["reached"] = float(group.epoch_to_threshold.notna().mean())
        rows.append(row)
    return pd.DataFrame(rows)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data, s)
    four = runs[runs.group != "sweep"]
    sweep = runs[runs.group == "sweep"]
    history = data.history
    return {
        "runs": runs,
        "summary": by_setting(four, ["group", "batch_size", "lr"]),
        "sweep": by_setting(sweep, ["batch_size"]).sort_values("batch_size"),
        "curves": curves_table(history[history.group != "sweep"], ["group"]),
        "sweep_curves": curves_table(history[history.group == "sweep"], ["batch_size"], ("acc",)),
    }


def _learning_curves(metric: str):
    def draw(tables, s):
        from batchlab.plots.learning_curves import band_curves

        return band_curves(tables["curves"], metric, ncols=2, title=(
            f"Brownlee blobs MLP 2-50-3, SGD momentum 0.9: {metric} vs epoch, {s['seeds']} seeds"))
    return draw


def _sweep_grid(tables, s):
    from batchlab.plots.learning_curves import band_curves

    return band_curves(tables["sweep_curves"], "acc", ncols=4, title=(
        f"Brownlee sweep: accuracy vs epoch for each batch size, lr {s['sweep_lr']:g}, {s['seeds']} seeds"))


def _stability(tables, s):
    from batchlab.plots.stability import stability_figure

    return stability_figure(tables["sweep"], s["threshold"], s["last_epochs"],
                            title=f"Brownlee blobs sweep (lr {s['sweep_lr']:g}, momentum 0.9, {s['seeds']} seeds)")


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, sweep = tables["runs"], tables["runs"][tables["runs"].group == "sweep"]
    sizes = sorted(int(b) for b in sweep.batch_size.unique())
    threshold = f"{s['threshold']:.0%}"
    # A run that never reaches the threshold counts as reaching it after the last epoch.
    reach = [sweep[sweep.batch_size == b].epoch_to_threshold.fillna(s["epochs"] + 1) for b in sizes]
    slope, verdict = trend(sizes, reach, "increasing")
    out = [Finding(f"the epoch at which test accuracy first reaches {threshold} grows with B", SOURCE,
                   f"slope {slope.format(3)} epochs per doubling of B over B in {sizes} "
                   f"(never reached counted as epoch {s['epochs'] + 1})", verdict)]
    jitter = [sweep[sweep.batch_size == b].late_jitter for b in sizes]
    slope, verdict = trend(sizes, jitter, "decreasing")
    out.append(Finding(f"test accuracy jitters less over the last {s['last_epochs']} epochs as B grows", SOURCE,
                       f"slope {slope.format(3)} (std of epoch-to-epoch change) per doubling of B", verdict))
    fast, b32 = runs[runs.group == FOUR[1][0]], runs[runs.group == FOUR[3][0]]
    # Where a run ends: its mean over the last epochs, since B=1 at lr 0.01 jumps by 10-30
    # points from epoch to epoch and a final epoch alone is a lottery ticket.
    last = s["last_epochs"]
    diff, verdict = compare(fast.late_test_acc, b32.late_test_acc, "less")
    out.append(Finding("B=1 at lr 0.01 ends clearly below B=32 (lr too large for B=1)", SOURCE,
                       f"mean test acc over the last {last} epochs, B=1 lr 0.01: "
                       f"{interval(fast.late_test_acc).format(3)}, B=32: {interval(b32.late_test_acc).format(3)}; "
                       f"difference {diff.format(3)}", verdict))
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


STUDY = Study(
    name="brownlee",
    question="Does batch size control the stability of training?",
    source=SOURCE,
    defaults=dict(seeds=5, epochs=200, sweep_batch_sizes=(4, 8, 16, 32, 64, 128, 256, 450), sweep_lr=0.01,
                  threshold=0.80, last_epochs=50),
    quick=dict(seeds=3, epochs=100, sweep_batch_sizes=(4, 32, 256), last_epochs=30),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("learning_curves_acc", _learning_curves("acc"), "curves"),
             FigureSpec("learning_curves_loss", _learning_curves("loss"), "curves"),
             FigureSpec("sweep_learning_curves", _sweep_grid, "sweep_curves"),
             FigureSpec("stability_vs_batch", _stability, "sweep")),
    findings=findings,
    notes=notes,
    minutes=(1.0, 0.3),
)
