"""How many epochs: the best-validation epoch, early stopping, and what stopping early costs
(the epochs study's analysis and findings; ``studies/epochs.py`` declares the runs).

Each batch size is trained twice with the same seeds (so the same initialisation and the
same data order): once for the full epoch budget, once with early stopping on the test
loss (patience p, best parameters restored; Keras' ``EarlyStopping(restore_best_weights=
True)``). The two runs of a pair are identical up to the stop epoch, so the contrast
"early-stopped minus full budget" is paired, seed by seed.

Every function here reads DataFrames (the store's per-epoch ``history`` and per-run
``summary``, with an ``arm`` column: ``full`` or ``early``), never training code.
References: ``science.md`` section 1 (learning curves, early stopping); Prechelt, "Early
stopping — but when?" (1998) for the rule of stopping after ``patience`` epochs without
improvement.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab.analysis.curves import curves_table
from batchlab.analysis.findings import (PROPORTION, PROPORTION_DIFFERENCE, Finding, decided, interval,
                                        interval_table, proportion, trend, verdict_from_interval, within)
from batchlab.analysis.intervals import Interval, geometric_t
from batchlab.analysis.study_data import StudyData

SOURCE = "Brownlee, Difference Between a Batch and an Epoch (2018); early stopping as in Keras (patience, restore best)"
FULL, EARLY = "full", "early"
ARMS = {FULL: "full budget", EARLY: "early stopping"}  # each arm's name in the group labels

# Per-pair quantities summarised by batch size (mean and 95% t-interval over seeds).
QUANTITIES = ("best_epoch", "best_updates", "stop_epoch", "restored_epoch", "epochs_saved", "frac_saved",
              "updates_saved", "full_updates", "early_updates", "full_test_acc", "early_test_acc", "acc_change",
              "full_last_loss", "full_min_loss", "loss_rise", "late_slope")


def methods(budget: int) -> dict:
    """Each quantity of :data:`QUANTITIES` with the interval that respects its range: epochs
    within [1, budget] (saved epochs [0, budget]), fractions and accuracies within [0, 1],
    update counts at least 0, losses (positive) on the log scale."""
    def bounded(low, high=None):
        return lambda values: interval(values, (low, high))
    out = {q: bounded(1, budget) for q in ("best_epoch", "stop_epoch", "restored_epoch")}
    out.update(epochs_saved=bounded(0, budget), frac_saved=bounded(*PROPORTION))
    out.update({q: bounded(0) for q in ("best_updates", "updates_saved", "full_updates", "early_updates",
                                        "loss_rise")})
    out.update(full_test_acc=proportion, early_test_acc=proportion, acc_change=bounded(*PROPORTION_DIFFERENCE))
    out.update(full_last_loss=geometric_t, full_min_loss=geometric_t, late_slope=interval)
    return out


def best_epochs(history: pd.DataFrame, metric: str = "test_loss") -> pd.DataFrame:
    """Per run: the first epoch >= 1 where ``metric`` is smallest (largest for an accuracy),
    with the metrics and the update count recorded there.

    Epoch 0 (before any update) is left out, as early stopping never restores it.
    """
    trained = history[(history.epoch >= 1) & np.isfinite(history[metric])]
    order = trained.sort_values(["run_id", "epoch"])
    pick = order.groupby("run_id")[metric].idxmax() if metric.endswith("acc") \
        else order.groupby("run_id")[metric].idxmin()
    return order.loc[pick.to_numpy(), ["run_id", "epoch", "step", "test_loss", "test_acc"]].set_index("run_id")


def at_epoch(history: pd.DataFrame, epochs: pd.Series) -> pd.DataFrame:
    """Per run (index of ``epochs``): the history row of the epoch given for that run."""
    wanted = pd.DataFrame({"run_id": epochs.index, "epoch": epochs.to_numpy(int)})
    return wanted.merge(history, on=["run_id", "epoch"], how="left").set_index("run_id")


def pair_table(history: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (batch size, seed): the full-budget run beside its early-stopped twin.

    Columns:
    - ``best_epoch``, ``best_updates``: the best-validation epoch of the full-budget run
      (smallest test loss over epochs 1..E) and the updates made by then;
    - ``stop_epoch``: last epoch the early-stopped run trained (= E if it never stopped);
      ``restored_epoch``: the epoch whose parameters it restored (its ``best_epoch``);
    - ``epochs_saved`` = E - stop_epoch, ``frac_saved`` = epochs_saved / E,
      ``updates_saved`` = full_updates - early_updates;
    - ``early_test_acc``: test accuracy of the restored parameters = the early-stopped run's
      test accuracy at ``restored_epoch`` (the store's summary row holds the *stop* epoch's
      metrics, not the restored ones); ``full_test_acc``: the full run's last epoch;
      ``acc_change`` = early_test_acc - full_test_acc (negative = accuracy lost);
    - ``full_last_loss``, ``full_min_loss``, ``loss_rise`` = last - min test loss of the
      full run (never negative: the minimum is over epochs that include the last);
      ``late_slope``: the full run's test-loss slope per epoch over the second half of its
      epochs (:func:`late_slope`), positive when it rises at the end.
    """
    runs = summary.set_index("run_id")
    # Every column below is a Series indexed by run_id (the run ids too): the frames align on it.
    full, early = runs[runs.arm == FULL], runs[runs.arm == EARLY]
    best = best_epochs(history[history.run_id.isin(full.index)])
    restored = at_epoch(history, early.best_epoch)
    left = pd.DataFrame({
        "batch_size": full.batch_size, "seed": full.seed, "budget": full.epochs,
        "best_epoch": best.epoch, "best_updates": best.step, "full_updates": full.steps,
        "full_test_acc": full.test_acc, "full_last_loss": full.test_loss, "full_min_loss": best.test_loss,
        "full_run_id": full.index.to_series()})
    right = pd.DataFrame({
        "batch_size": early.batch_size, "seed": early.seed, "status": early.status,
        "stop_epoch": early.epochs_done, "restored_epoch": early.best_epoch, "early_updates": early.steps,
        "early_test_acc": restored.test_acc, "early_test_loss": restored.test_loss,
        "early_run_id": early.index.to_series()})
    pairs = left.merge(right, on=["batch_size", "seed"], how="inner", validate="one_to_one")
    pairs["stopped"] = pairs.status == "early_stopped"
    pairs["epochs_saved"] = pairs.budget - pairs.stop_epoch
    pairs["frac_saved"] = pairs.epochs_saved / pairs.budget
    pairs["updates_saved"] = pairs.full_updates - pairs.early_updates
    pairs["acc_change"] = pairs.early_test_acc - pairs.full_test_acc
    pairs["loss_rise"] = pairs.full_last_loss - pairs.full_min_loss
    pairs["late_slope"] = pairs.full_run_id.map(late_slope(history[history.run_id.isin(full.index)]))
    return pairs.sort_values(["batch_size", "seed"]).reset_index(drop=True)


def late_slope(history: pd.DataFrame, metric: str = "test_loss") -> pd.Series:
    """Per run: the least-squares slope of ``metric`` against epoch over the second half of its
    epochs (per epoch).

    Overfitting is the test loss turning up while training goes on. "Last epoch above the best
    epoch" cannot show it: the best is the minimum over epochs that include the last, so that
    difference is never negative and cannot come out against overfitting; and an epoch chosen
    on the same curve it is compared with wins by luck (choosing it on the other seeds still
    claimed overfitting that was not there in 4-5% of simulated studies). The late slope chooses
    nothing: positive when the loss rises at the end, negative when it still falls."""
    trained = history[history.epoch >= 1].drop_duplicates(["run_id", "epoch"])
    out = {}
    for run_id, run in trained.groupby("run_id"):
        late = run[run.epoch > run.epoch.max() / 2].dropna(subset=[metric])
        out[run_id] = float(np.polyfit(late.epoch, late[metric], 1)[0]) if len(late) >= 2 else np.nan
    return pd.Series(out, dtype=float)


def by_batch(pairs: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Per batch size: estimate and 95% interval over seeds (``q``, ``q_low``, ``q_high``) of
    every quantity in :data:`QUANTITIES` (:func:`methods`), the share of pairs that stopped
    early, and the range (``_min``/``_max``) of the best and stop epochs for marking them on curves."""
    def before(group: pd.DataFrame) -> dict:
        return {"seeds": len(group), "budget": int(group.budget.max()), "stopped_share": float(group.stopped.mean())}

    def after(group: pd.DataFrame) -> dict:
        ranges = {}
        for name in ("best_epoch", "stop_epoch"):
            ranges.update({f"{name}_min": float(group[name].min()), f"{name}_max": float(group[name].max())})
        return ranges

    return interval_table(pairs, "batch_size", methods(budget), before=before, after=after)


def label(arm: str, batch_size: int) -> str:
    """The group label of one arm at one batch size (the study's grids are labelled so)."""
    return f"{ARMS[arm]}, B={batch_size}"


def _arm(frame: pd.DataFrame) -> pd.Series:
    """Each row's arm (``full`` or ``early``), read from its group label."""
    arm_of = {name: key for key, name in ARMS.items()}
    return frame.group.str.split(", B=").str[0].map(arm_of)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    history = data.history.assign(arm=_arm(data.history))
    summary = data.summary.assign(arm=_arm(data.summary))
    pairs = pair_table(history, summary)
    table = by_batch(pairs, s["epochs"])
    full_history = history[history.arm == FULL]
    return {"pairs": pairs, "by_batch": table, "curves": curves_table(full_history, ["batch_size"])}


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    pairs = tables["pairs"]
    sizes = sorted(int(b) for b in pairs.batch_size.unique())
    per_b = {b: pairs[pairs.batch_size == b] for b in sizes}
    budget = s["epochs"]
    saved = interval(pairs.frac_saved, PROPORTION)
    detail = "; ".join(
        f"B={b}: stops at epoch {interval(p.stop_epoch, (1, budget)).format(3)} of {budget}, saves "
        f"{interval(p.frac_saved, PROPORTION).format(2, 100)} % of the epochs = "
        f"{_count(interval(p.updates_saved, (0, None)))} updates ({p.stopped.sum()}/{len(p)} runs stopped)"
        for b, p in per_b.items())
    out = [decided(f"early stopping (patience {s['patience']} on test loss) saves a fraction of the epoch budget",
                   SOURCE, f"fraction of the {budget} epochs saved, all B pooled: {saved.format(2, 100)} % (95% t "
                   "over pairs, kept within [0, 100] %); " + detail, verdict_from_interval(saved.low, saved.high, 1),
                   saved)]
    points = f"{100 * s['band']:g} point"
    for b, p in per_b.items():
        change = interval(p.acc_change, PROPORTION_DIFFERENCE)
        out.append(decided(
            f"B={b}: stopping early costs little accuracy: the paired difference in final test accuracy "
            f"(restored best epoch minus full budget) is within \u00b1{points} (verdict: agrees if its 95% interval "
            f"lies inside [-{s['band']:g}, {s['band']:g}], disagrees if entirely outside, else inconclusive)",
            SOURCE, f"difference {change.format(2, 100)} points (95% t over paired seeds); test acc early-stopped "
            f"{proportion(p.early_test_acc).format(3)} vs full budget {proportion(p.full_test_acc).format(3)}",
            within(change, -s["band"], s["band"]), change))
    return out + _timing_findings(per_b, s)


def _timing_findings(per_b: dict[int, pd.DataFrame], s: dict) -> list[Finding]:
    """When the best epoch comes, by B, and whether the test loss rises late (overfitting)."""
    sizes, budget = list(per_b), s["epochs"]
    best = [per_b[b].best_epoch for b in sizes]
    slope, verdict = trend(sizes, best, "increasing")
    listed = ", ".join(f"B={b}: {interval(per_b[b].best_epoch, (1, budget)).format(3)}" for b in sizes)
    in_updates = ", ".join(f"B={b}: {_count(interval(per_b[b].best_updates, (0, None)))}" for b in sizes)
    out = [decided("the best-validation epoch (min test loss) comes earlier for smaller B", SOURCE,
                   f"slope {slope.format(3)} epochs per doubling of B (95% {slope.method}); best epoch {listed} "
                   f"(in updates: {in_updates})", verdict, slope)]
    for b, p in per_b.items():
        slope = interval(p.late_slope)
        out.append(decided(f"B={b}: the test loss rises over the second half of training (overfitting)", SOURCE,
                           f"test-loss slope over epochs {budget // 2 + 1}-{budget}: {slope.format(3)} per epoch (95% "
                           f"t over seeds); last-epoch loss {geometric_t(p.full_last_loss).format(3)}, lowest "
                           f"{geometric_t(p.full_min_loss).format(3)} (geometric means; the lowest is taken over "
                           "epochs that include the last, so it never lies above it)",
                           verdict_from_interval(slope.low, slope.high, 1), slope))
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
