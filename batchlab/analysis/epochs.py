"""How many epochs: the best-validation epoch, early stopping, and what stopping early costs.

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

from batchlab.analysis.findings import interval_table

FULL, EARLY = "full", "early"

# Per-pair quantities summarised by batch size (mean and 95% t-interval over seeds).
QUANTITIES = ("best_epoch", "best_updates", "stop_epoch", "restored_epoch", "epochs_saved", "frac_saved",
              "updates_saved", "full_updates", "early_updates", "full_test_acc", "early_test_acc", "acc_change",
              "full_last_loss", "full_min_loss", "loss_rise")


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
      full run (> 0 when the run overfits the test loss by the end of the budget).
    """
    runs = summary.set_index("run_id")
    full, early = runs[runs.arm == FULL], runs[runs.arm == EARLY]
    best = best_epochs(history[history.run_id.isin(full.index)])
    restored = at_epoch(history, early.best_epoch)
    left = pd.DataFrame({
        "batch_size": full.batch_size, "seed": full.seed, "budget": full.epochs,
        "best_epoch": best.epoch, "best_updates": best.step, "full_updates": full.steps,
        "full_test_acc": full.test_acc, "full_last_loss": full.test_loss, "full_min_loss": best.test_loss,
        "full_run_id": full.index})
    right = pd.DataFrame({
        "batch_size": early.batch_size, "seed": early.seed, "status": early.status,
        "stop_epoch": early.epochs_done, "restored_epoch": early.best_epoch, "early_updates": early.steps,
        "early_test_acc": restored.test_acc, "early_test_loss": restored.test_loss, "early_run_id": early.index})
    pairs = left.merge(right, on=["batch_size", "seed"], how="inner", validate="one_to_one")
    pairs["stopped"] = pairs.status == "early_stopped"
    pairs["epochs_saved"] = pairs.budget - pairs.stop_epoch
    pairs["frac_saved"] = pairs.epochs_saved / pairs.budget
    pairs["updates_saved"] = pairs.full_updates - pairs.early_updates
    pairs["acc_change"] = pairs.early_test_acc - pairs.full_test_acc
    pairs["loss_rise"] = pairs.full_last_loss - pairs.full_min_loss
    return pairs.sort_values(["batch_size", "seed"]).reset_index(drop=True)


def by_batch(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: mean and 95% t-interval over seeds (``q``, ``q_low``, ``q_high``) of
    every quantity in :data:`QUANTITIES`, the share of pairs that stopped early, and the
    range (``_min``/``_max``) of the best and stop epochs for marking them on curves."""
    def before(group: pd.DataFrame) -> dict:
        return {"seeds": len(group), "budget": int(group.budget.max()), "stopped_share": float(group.stopped.mean())}

    def after(group: pd.DataFrame) -> dict:
        ranges = {}
        for name in ("best_epoch", "stop_epoch"):
            ranges.update({f"{name}_min": float(group[name].min()), f"{name}_max": float(group[name].max())})
        return ranges

    return interval_table(pairs, "batch_size", QUANTITIES, before=before, after=after)
