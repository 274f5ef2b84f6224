"""A stored sweep's analysis (``batchlab analyze``): per (B, lr) the steps, samples and time to
the target; each B at its best lr; the fit S(B) = S_min (1 + B_crit / B) and the regime of each
B (``science.md`` section 4). The statistics are ``analysis/scaling.py``'s, which the
critical-batch study uses too; this module reads the sweep from the store and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from batchlab.analysis.scaling import CriticalBatchFit, fit_critical_batch, per_setting
from batchlab.analysis.selection import best_per_batch, edge_warning
from batchlab.targets import Target, parse_target
from batchlab.errors import BatchlabError
from batchlab.store import Store, series_frame, summary_frame


@dataclass
class SweepAnalysis:
    name: str
    target: Target
    settings: pd.DataFrame  # per (B, lr)
    best: pd.DataFrame  # per B, at its best lr, with the regime
    fit: CriticalBatchFit | None  # None when fewer than 3 B have a best lr
    at_best: pd.DataFrame  # per-epoch history of the runs at each B's best lr
    missing: int  # runs of the sweep not (yet) in the store

    @property
    def curve_metric(self) -> str:
        """What the learning curves draw: accuracy, or R^2 for a regression (no accuracy)."""
        return "r2" if "train_r2" in self.at_best and "train_acc" not in self.at_best else "acc"

    @property
    def edge(self) -> str:
        """A warning when a best lr lies at the edge of the lr grid ('' otherwise)."""
        return edge_warning(self.best, self.settings.lr)


def sweep_tables(history: pd.DataFrame, summary: pd.DataFrame, target: Target
                 ) -> tuple[pd.DataFrame, pd.DataFrame, CriticalBatchFit | None, pd.DataFrame]:
    """(per (B, lr) settings, each B at its best lr, the critical-batch fit or None, the history
    of the runs at each B's best lr). The best lr is chosen by the one rule of
    ``analysis/selection.py`` (never a diverged or blown-up run, nor one ending short of the
    target); the fit uses the B that have one (3 or more), and then labels each B with its regime."""
    settings = per_setting(summary, history, target)
    best = best_per_batch(settings)
    fit = None
    reached = best[best.lr.notna()]
    if len(reached) >= 3:
        fit = fit_critical_batch(reached.batch_size, reached.steps)
        best["regime"] = [fit.regime(b) for b in best.batch_size]
    at_best = history.merge(best[["batch_size", "lr"]], on=["batch_size", "lr"])
    return settings, best, fit, at_best


def analyse_sweep(db: str | Path, sweep: str | None = None, target: str | None = None) -> SweepAnalysis:
    """The stored sweep ``sweep`` (default: the last one) analysed against ``target`` (default:
    the sweep's own); the target is checked before the store is read."""
    if target is not None:
        parse_target(target)
    with Store(db, create=False) as store:
        sweeps = store.sweeps()
        if not sweeps:
            raise BatchlabError(f"{db} holds no sweep")
        if sweep is None:
            sweep = list(sweeps)[-1]
        if sweep not in sweeps:
            raise BatchlabError(f"no sweep named {sweep!r} in {db}; sweeps: {', '.join(sweeps)}")
        wanted = store.sweep_run_ids(sweep)
        runs = store.load(wanted, steps=False)
    if not runs:
        raise BatchlabError(f"sweep {sweep!r} has no finished runs yet")
    goal = parse_target(target or sweeps[sweep]["target"])
    settings, best, fit, at_best = sweep_tables(series_frame(runs, "epoch"), summary_frame(runs), goal)
    return SweepAnalysis(sweep, goal, settings, best, fit, at_best, len(wanted) - len(runs))
