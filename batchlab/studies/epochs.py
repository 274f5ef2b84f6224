"""How many epochs? The best-validation epoch, early stopping, and batch size (``science.md`` section 1).

For each batch size B, the same seeds train twice: for the full epoch budget, and with
early stopping on the test loss (patience p, best parameters restored, as Keras'
``EarlyStopping(monitor='val_loss', patience=p, restore_best_weights=True)``). Same seeds
mean the same initialisation and data order, so the two runs agree epoch by epoch until
the early stop and every contrast is paired by seed. Measured per B: the best-validation
epoch, the epoch early stopping stops at, the epochs and updates it saves, and the test
accuracy it loses (or gains) against training the whole budget.

Default data: MNIST-1D with an MLP 40-128-128-10, SGD lr 0.02 momentum 0.9 for every B (the
learning rate is *not* re-tuned per batch size), 60 epochs: the test loss reaches its
minimum well inside the budget and then rises (the network overfits), at every B.
"""

from __future__ import annotations

import pandas as pd

from batchlab.analysis.curves import curves_table
from batchlab.analysis.epochs import EARLY, FULL, by_batch, pair_table
from batchlab.analysis.findings import Finding, Interval, compare, interval, trend, verdict_from_interval, within
from batchlab.config import EarlyStopping
from batchlab.studies.base import FigureSpec, Grid, Study, StudyData

SOURCE = "Brownlee, Difference Between a Batch and an Epoch (2018); early stopping as in Keras (patience, restore best)"
ARMS = {FULL: "full budget", EARLY: "early stopping"}


def label(arm: str, batch_size: int) -> str:
    return f"{ARMS[arm]}, B={batch_size}"


def grids(s: dict) -> list[Grid]:
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), epochs=s["epochs"], lr=s["lr"],
                  momentum=s["momentum"], seeds=s["seeds"])
    stop = EarlyStopping(monitor="test_loss", patience=s["patience"], restore_best=True)
    out = []
    for b in s["batch_sizes"]:
        out.append(Grid(label(FULL, b), dict(common, batch_size=b)))
        out.append(Grid(label(EARLY, b), dict(common, batch_size=b, early_stopping=stop)))
    return out


def _arm(frame: pd.DataFrame) -> pd.Series:
    arm_of = {name: key for key, name in ARMS.items()}
    return frame.group.str.split(", B=").str[0].map(arm_of)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    history = data.history.assign(arm=_arm(data.history))
    summary = data.summary.assign(arm=_arm(data.summary))
    pairs = pair_table(history, summary)
    table = by_batch(pairs)
    full_history = history[history.arm == FULL]
    return {"pairs": pairs, "by_batch": table, "curves": curves_table(full_history, ["batch_size"])}


def _title(s: dict) -> str:
    width = "-".join(str(h) for h in s["hidden"])
    return (f"{s['data']}, MLP {width}, SGD lr {s['lr']:g} momentum {s['momentum']:g}, {s['epochs']} epochs\n"
            f"early stopping on test loss, patience {s['patience']}, best restored")


def _curves(tables, s):
    from batchlab.plots.epochs import marked_curves

    return marked_curves(tables["curves"], tables["by_batch"], _title(s))


def _budget(tables, s):
    from batchlab.plots.epochs import budget_figure

    return budget_figure(tables["by_batch"], s["band"], _title(s))


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    pairs = tables["pairs"]
    sizes = sorted(int(b) for b in pairs.batch_size.unique())
    per_b = {b: pairs[pairs.batch_size == b] for b in sizes}
    budget = s["epochs"]
    saved = interval(pairs.frac_saved)
    detail = "; ".join(
        f"B={b}: stops at epoch {interval(p.stop_epoch).format(3)} of {budget}, saves "
        f"{interval(p.frac_saved).format(2, 100)} % of the epochs = {_count(interval(p.updates_saved))} "
        f"updates ({p.stopped.sum()}/{len(p)} runs stopped)" for b, p in per_b.items())
    out = [Finding(f"early stopping (patience {s['patience']} on test loss) saves a fraction of the epoch budget",
                   SOURCE, f"fraction of the {budget} epochs saved, all B pooled: {saved.format(2, 100)} %; "
                   + detail, verdict_from_interval(saved.low, saved.high, 1))]
    points = f"{100 * s['band']:g} point"
    for b, p in per_b.items():
        change = interval(p.acc_change)
        out.append(Finding(
            f"B={b}: stopping early costs little accuracy: the paired difference in final test accuracy "
            f"(restored best epoch minus full budget) is within \u00b1{points} (verdict: agrees if its 95% interval "
            f"lies inside [-{s['band']:g}, {s['band']:g}], disagrees if entirely outside, else inconclusive)",
            SOURCE, f"difference {change.format(2, 100)} points; test acc early-stopped "
            f"{interval(p.early_test_acc).format(3)} vs full budget {interval(p.full_test_acc).format(3)}",
            within(change, -s["band"], s["band"])))
    best = [per_b[b].best_epoch for b in sizes]
    slope, verdict = trend(sizes, best, "increasing")
    listed = ", ".join(f"B={b}: {interval(per_b[b].best_epoch).format(3)}" for b in sizes)
    in_updates = ", ".join(f"B={b}: {_count(interval(per_b[b].best_updates))}" for b in sizes)
    out.append(Finding("the best-validation epoch (min test loss) comes earlier for smaller B", SOURCE,
                       f"slope {slope.format(3)} epochs per doubling of B; best epoch {listed} "
                       f"(in updates: {in_updates})", verdict))
    for b, p in per_b.items():
        diff, verdict = compare(p.full_last_loss, p.full_min_loss, "greater")
        out.append(Finding(f"B={b}: the last-epoch test loss is higher than the best-epoch test loss (overfitting)",
                           SOURCE, f"last {interval(p.full_last_loss).format(3)} vs best "
                           f"{interval(p.full_min_loss).format(3)}; difference {diff.format(3)} (Welch)", verdict))
    return out


def _count(iv: Interval) -> str:
    """A count (updates) with its interval, rounded to whole updates."""
    if iv.n < 2:
        return f"{iv.mean:,.0f} (n={iv.n})"
    return f"{iv.mean:,.0f} [{iv.low:,.0f}, {iv.high:,.0f}]"


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    pairs = tables["pairs"]
    same = int((pairs.restored_epoch == pairs.best_epoch).sum())
    return [
        "The test set is the validation set here: early stopping watches the test loss and the accuracy is "
        "read on the same rows, so the early-stopped accuracy is optimistic (selected on the test set). "
        "A held-out validation split would remove that bias.",
        f"Each B uses the same learning rate ({s['lr']:g}, momentum {s['momentum']:g}); it is not re-tuned per "
        "batch size, so part of the B effect is an effect of the noise scale lr/B, not of B alone.",
        "The early-stopped run's accuracy is that of its restored parameters: the test accuracy recorded at "
        "the epoch it restored. The store's summary row of such a run holds the metrics of the epoch it "
        "stopped at (restored epoch + patience), which is not the model it returns.",
        f"The epoch early stopping restored equals the full run's best-validation epoch in {same} of "
        f"{len(pairs)} pairs (they differ when the test loss reaches a new minimum more than "
        f"{s['patience']} epochs after an earlier one).",
        "Test loss and test accuracy need not peak together: the loss also punishes confident mistakes, so "
        "accuracy can keep rising while the loss rises; stopping on the loss then costs accuracy.",
    ]


STUDY = Study(
    name="epochs",
    question="How many epochs should one train, and how do the best-validation epoch and early stopping change with B?",
    source=SOURCE,
    defaults=dict(data="mnist1d", hidden=(128, 128), lr=0.02, momentum=0.9, epochs=60, patience=10,
                  batch_sizes=(16, 64, 256), seeds=5, band=0.01),
    quick=dict(seeds=2, hidden=(64, 64), epochs=20, patience=4, batch_sizes=(16, 64)),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("learning_curves_marked", _curves, "curves"),
             FigureSpec("early_stopping_by_batch", _budget, "by_batch")),
    findings=findings,
    notes=notes,
    minutes=(2.5, 0.2),
)
