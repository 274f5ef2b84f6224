"""The one rule that picks a "best" run: which runs may be chosen, and the best lr per batch size.

``batchlab analyze``, the critical-batch study (and the advisor) choose with this module only,
so they cannot disagree on what "best" means (``design.md``, "Choosing is analysis").

A run is **usable** when all three hold:

1. it did not diverge (its status is not ``diverged`` and its final training loss is finite);
2. it did not blow up: its final training loss is at most ``BLOWUP`` times its loss before
   any update (epoch 0), and it is not rising at the end — rising means the least-squares
   slope of log loss over its last ``max(RISING_EPOCHS, 10% of its epochs)`` evaluations is
   positive *and* its final loss is more than ``RISE`` times the smallest it reached. A run
   with lr = 1 can leave the target behind with a finite loss of 1e22: it is "finished", not
   "diverged", and crossed the target first, so steps-to-target alone would choose it;
3. it ended at the target: its final value of the target's metric satisfies the target
   (having crossed it once is not enough).

A (B, lr) setting is **eligible** when every seed of it is usable. The best lr of a batch size
is its eligible setting with the fewest mean steps to the target; a batch size without an
eligible setting has no best (it is never filled in with an unstable or unfinished one). A
best lr at the smallest or largest lr of the grid is flagged: the best may lie outside it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from batchlab.analysis.intervals import LEVEL, Interval, welch, welch_log
from batchlab.diagnosis import BLOWUP  # final training loss above twice its start: worse than not training at all
from batchlab.targets import Target

RISE = 1.5  # rising at the end: final loss 50% above the run's smallest ...
RISING_EPOCHS = 3  # ... with the loss trending up over (at least) its last 3 evaluations

RULE = (f"best lr per B = the fewest mean steps to the target among the lrs where every seed is usable: not "
        f"diverged, not blown up (final training loss <= {BLOWUP:g} x its start, and not rising at the end: "
        f"up over its last evaluations and > {RISE:g} x its minimum), and ending at the target (not just "
        "crossing it)")


def _loss_column(history: pd.DataFrame) -> str | None:
    """The training loss where recorded, else the test loss (what shows a blow-up); None if neither."""
    for name in ("train_loss", "test_loss"):
        if name in history and history[name].notna().any():
            return name
    return None


def blown_up(loss: np.ndarray) -> str:
    """Why a run's loss series (in epoch order, epoch 0 first) shows a blow-up, or ''."""
    loss = np.asarray(loss, float)
    loss = loss[~np.isnan(loss)]
    if len(loss) == 0:
        return ""
    last = loss[-1]
    if not math.isfinite(last):
        return "its loss is not finite"
    if len(loss) > 1 and last > BLOWUP * loss[0]:
        return f"final loss {last:.3g} > {BLOWUP:g} x its start {loss[0]:.3g}"
    window = max(RISING_EPOCHS, len(loss) // 10)
    tail = loss[-window:]
    if len(loss) > window and np.all(tail > 0) and last > RISE * loss.min():
        slope = np.polyfit(np.arange(len(tail)), np.log(tail), 1)[0]
        if slope > 0:
            return f"its loss rises over its last {window} evaluations to {last:.3g} (> {RISE:g} x its minimum)"
    return ""


def run_health(history: pd.DataFrame, summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """One row per run: ``usable`` (may be chosen as best) and ``why_not`` (the first rule it
    breaks, in words; '' when usable)."""
    metric = _loss_column(history)
    runs = history.drop_duplicates(["run_id", "epoch"]).sort_values(["run_id", "epoch"])
    status = summary.drop_duplicates("run_id").set_index("run_id").get("status", pd.Series(dtype=object))
    rows = []
    for run_id, run in runs.groupby("run_id", sort=False):
        finals = run[target.metric].dropna()
        why = ""
        if status.get(run_id) == "diverged":
            why = "diverged"
        if not why and metric is not None:
            why = blown_up(run[metric].to_numpy())
        if not why and (finals.empty or not bool(target.reached(finals.to_numpy()[-1:])[0])):
            why = f"ended below the target ({target.metric} {finals.iloc[-1]:.3g})" if len(finals) else "no record"
        rows.append({"run_id": run_id, "usable": not why, "why_not": why})
    return pd.DataFrame(rows, columns=["run_id", "usable", "why_not"])


def best_per_batch(settings: pd.DataFrame) -> pd.DataFrame:
    """For each B the eligible setting (every seed usable: column ``usable`` == 1) with the
    fewest mean steps to the target; a B with none gets a row with lr NaN (no best) and the
    share of seeds that reached the target at its most successful lr."""
    best = []
    for b, group in settings.groupby("batch_size"):
        eligible = group[group.usable == 1.0]
        if len(eligible):
            best.append(eligible.loc[eligible.steps.idxmin()])
            continue
        row = group.loc[group.reached.idxmax()].copy()
        for column in row.index.difference(["batch_size", "seeds", "reached", "usable"]):
            row[column] = math.nan
        best.append(row)
    frame = pd.DataFrame(best).reset_index(drop=True)
    return frame.astype({"batch_size": int, "seeds": int})


def grid_edge(best: pd.DataFrame, lrs) -> pd.Series:
    """Per row of ``best``: 'largest' or 'smallest' when its lr is at that end of the lr grid
    ``lrs`` (the best may then lie outside the grid), else ''."""
    lrs = np.sort(np.unique(np.asarray(lrs, float)))
    if len(lrs) < 2:
        return pd.Series([""] * len(best), index=best.index)
    lr = best.lr.to_numpy(float)
    return pd.Series(np.where(np.isclose(lr, lrs[-1]), "largest", np.where(np.isclose(lr, lrs[0]), "smallest", "")),
                     index=best.index)


def edge_warning(best: pd.DataFrame, lrs) -> str:
    """One sentence naming the batch sizes whose best lr is at the edge of the lr grid ('' if none)."""
    edge = grid_edge(best, lrs)
    at = [f"B={int(b)} ({side})" for b, side in zip(best.batch_size, edge) if side]
    if not at:
        return ""
    return ("the best lr is at the edge of the lr grid at " + ", ".join(at) +
            ": the best may lie outside the grid (extend the lrs to be sure)")


def best_versus(groups: Mapping[Any, Sequence[float]], reference: Any, *, higher_is_better: bool = True,
                ratio: bool = False) -> tuple[Any, Interval]:
    """The candidate with the best mean (every group but ``reference``) and how it compares with
    ``reference``: mean(best) - mean(reference) (``ratio``: the ratio of geometric means) with a
    Welch interval at level 1 - 0.05/m, m the number of candidates it was chosen from.

    A best of several compared with 95% intervals on the data that chose it looks better than it
    is (the winner's curse). With the Bonferroni level every candidate's interval holds at once
    with probability >= 95%, so the chosen one's holds whichever was chosen: the choice is
    accounted for (an interval over held-out seeds is not enough: the held-out contrasts share
    seeds, and claimed an effect that was not there in 4-5% of simulated studies instead of 2.5%)."""
    candidates = {key: values for key, values in groups.items() if key != reference}
    means = {key: float(np.nanmean(np.log(values) if ratio else values)) for key, values in candidates.items()}
    best = (max if higher_is_better else min)(means, key=means.get)
    level = 1 - (1 - LEVEL) / max(len(candidates), 1)
    method = welch_log if ratio else welch
    iv = method(candidates[best], groups[reference], level=level)
    return best, Interval(iv.mean, iv.low, iv.high, iv.n,
                          f"{iv.method} at level 1 - 0.05/{len(candidates)} (Bonferroni over the candidates)", iv.why)
