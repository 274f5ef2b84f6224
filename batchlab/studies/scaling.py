"""The critical batch size of a stored sweep: best lr per B, steps/samples/time to target,
the fit S(B) = S_min (1 + B_crit / B) and the regime of each B (``science.md`` section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from batchlab.analysis.scaling import CriticalBatchFit, best_per_batch, fit_critical_batch, per_setting, to_target
from batchlab.analysis.targets import Target, parse_target
from batchlab.paths import check_writable_dir
from batchlab.errors import BatchlabError
from batchlab.figure_helpers import FigureDrawer
from batchlab.store import Store, series_frame, summary_frame


@dataclass
class SweepAnalysis:
    name: str
    target: Target
    settings: pd.DataFrame  # per (B, lr)
    best: pd.DataFrame  # per B, at its best lr, with the regime
    fit: CriticalBatchFit | None
    files: list[Path]
    missing: int  # runs of the sweep not (yet) in the store


def analyze(db: str | Path, out: str | Path, sweep: str | None = None, target: str | None = None,
            drawer: FigureDrawer | None = None) -> SweepAnalysis:
    """Analyse a stored sweep into ``out``; the target and the folder are checked before any work.
    ``drawer``: who draws the figures (a command's helper processes); by default this process."""
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
    out = check_writable_dir(out, "--out folder")
    history, summary = series_frame(runs, "epoch"), summary_frame(runs)
    settings = per_setting(summary, to_target(history, goal))
    best = best_per_batch(settings)
    fit = None
    reached = best[best.reached == 1.0]
    if len(reached) >= 3:
        fit = fit_critical_batch(reached.batch_size, reached.steps)
        best["regime"] = [fit.regime(b) for b in best.batch_size]
    files = [out / "settings.csv", out / "best_per_batch.csv"]
    settings.to_csv(files[0], index=False)
    best.to_csv(files[1], index=False)
    drawer = drawer or FigureDrawer(helpers=0)
    figures = "batchlab.plots.scaling:"
    drawer.draw(figures + "to_target_figure", best, fit, str(goal), path=out / "to_target_vs_batch")
    drawer.draw(figures + "final_metrics_figure", best, path=out / "final_metrics_vs_batch")
    drawer.draw(figures + "heatmap_figure", settings, best=best, title=f"sweep {sweep!r}: final test accuracy",
                path=out / "lr_batch_heatmap")
    at_best = history.merge(best[["batch_size", "lr"]], on=["batch_size", "lr"])
    drawer.draw("learning_curves", at_best, "acc", title="Learning curves at each batch size's best lr",
                path=out / "learning_curves_best_lr")
    files += [file for figure in drawer.files() for file in figure]
    return SweepAnalysis(sweep, goal, settings, best, fit, files, len(wanted) - len(runs))
