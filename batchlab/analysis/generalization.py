"""Generalization gap and sharpness vs batch size, from stored runs (``science.md`` sections 5, 7):
the generalization study's tables and findings (``studies/generalization.py`` declares the runs
and measures the sharpness).

Conventions used throughout:
- the accuracy gap is ``gap_acc = train_acc - test_acc`` (positive when the model does better
  on the rows it was trained on), the loss gap ``gap_loss = test_loss - train_loss`` (positive
  in the same case); both from the end of training;
- sharpness measures come from the checkpoint instrument's records (one row per run).

Pure pandas/numpy/scipy: nothing here imports the engine or JAX.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from batchlab.analysis.curves import curves_table
from batchlab.analysis.findings import (BOOTSTRAP, Finding, Interval, compare, interval, interval_columns,
                                        interval_table, trend, verdict_from_interval)
from batchlab.analysis.study_data import StudyData

SOURCE = "Keskar et al., ICLR 2017"
SOURCE_WEAK = "Andriushchenko et al., ICML 2023"
INSTRUMENT = "sharpness"
MEASURES = ("lambda_max", "hessian_trace", "eps_sharpness")
NAMES = {"lambda_max": "Hessian lambda_max", "hessian_trace": "Hessian trace",
         "eps_sharpness": "epsilon-sharpness"}
RUN_COLUMNS = ("group", "batch_size", "lr", "seed", "status", "epochs_done", "steps", "samples_seen",
               "train_acc", "test_acc", "train_loss", "test_loss")


def per_run(summary: pd.DataFrame, measurements: pd.DataFrame, instrument: str,
            measures: Sequence[str]) -> pd.DataFrame:
    """One row per run: its settings, final metrics, both gaps and its sharpness ``measures``.

    A run with no record of ``instrument`` (it stopped before the checkpoint) keeps NaN there.
    """
    runs = summary[["run_id", *RUN_COLUMNS]].copy()
    runs["gap_acc"] = runs.train_acc - runs.test_acc
    runs["gap_loss"] = runs.test_loss - runs.train_loss
    mine = measurements[measurements.instrument == instrument] if "instrument" in measurements else measurements
    if mine.empty:
        return runs.assign(**{m: np.nan for m in measures})
    # The last epoch measured per run: the checkpoint is the end of training. Columns that only
    # other instruments fill (the store's measurements share one frame) are all NaN here: dropped.
    last = mine.sort_values("epoch").groupby("run_id").tail(1).dropna(axis=1, how="all")
    keep = ["run_id"] + [c for c in last.columns if c not in ("run_id", "instrument", "group", "epoch")]
    runs = runs.merge(last[keep], on="run_id", how="left")
    return runs.assign(**{m: np.nan for m in measures if m not in runs})


def n_train(runs: pd.DataFrame) -> int:
    """Training-set size N, from what the runs saw: samples_seen / epochs (every epoch covers N rows)."""
    done = runs[runs.epochs_done > 0]
    return int(round((done.samples_seen / done.epochs_done).iloc[0]))


def batch_label(b: int, n: int) -> str:
    """``"4000 (full)"`` for B = N (batch gradient descent), else the number."""
    return f"{b} (full)" if b == n else str(b)


def by_batch(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per batch size: mean and 95% t-interval over seeds of each of ``columns``
    (``name``, ``name_low``, ``name_high``), the number of seeds and the updates made."""
    n = n_train(runs)
    return interval_table(runs, "batch_size", columns, before=lambda group: {
        "label": batch_label(int(group.batch_size.iloc[0]), n), "seeds": len(group),
        "steps": int(group.steps.max())})


def spearman(x, y) -> np.ndarray | float:
    """Spearman's rank correlation: Pearson's correlation of the ranks of x and y.

    rho = cov(rank x, rank y) / (sd(rank x) sd(rank y)), tied values sharing their average rank;
    NaN when x or y is constant. 2-D inputs give one rho per row (vectorised for the bootstrap).
    """
    from scipy import stats

    rx = stats.rankdata(np.asarray(x, float), axis=-1)
    ry = stats.rankdata(np.asarray(y, float), axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    norm = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, (rx * ry).sum(axis=-1) / norm, np.nan)
    return float(rho) if rho.ndim == 0 else rho


def bootstrap_spearman(x: Sequence[float], y: Sequence[float], *, seed: int = 0,
                       resamples: int = BOOTSTRAP) -> Interval:
    """Spearman's rho of paired values with a percentile bootstrap 95% interval over the pairs.

    Each resample draws n (x, y) pairs with replacement (runs are the unit: a seed and a batch
    size together); resamples whose x or y is constant have no rho and are left out. NaN pairs
    are dropped first; fewer than 4 pairs give no interval.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    rho = spearman(x, y) if n >= 2 else math.nan
    if n < 4 or not math.isfinite(rho):
        return Interval(rho, math.nan, math.nan, n)
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    boot = spearman(x[index], y[index])
    low, high = np.quantile(boot[np.isfinite(boot)], [0.025, 0.975])
    return Interval(rho, float(low), float(high), n)


def correlations(runs: pd.DataFrame, measures: Sequence[str], target: str = "gap_acc") -> pd.DataFrame:
    """Per sharpness measure: Spearman's rho with ``target`` across runs and its bootstrap interval."""
    rows = []
    for k, name in enumerate(measures):
        iv = bootstrap_spearman(runs[name], runs[target], seed=k)
        rows.append({"measure": name, "target": target, **interval_columns("rho", iv), "runs": iv.n})
    return pd.DataFrame(rows)


def sweet_spot(table: pd.DataFrame, key: str = "test_acc") -> pd.Series:
    """The row of :func:`by_batch` with the best mean ``key`` (the smaller B on a tie)."""
    return table.sort_values([key, "batch_size"], ascending=[False, True]).iloc[0]


def fitted_batches(runs: pd.DataFrame, threshold: float) -> list[int]:
    """Batch sizes at which every seed ends with train accuracy >= ``threshold``: Keskar's
    comparison is between runs that fit the training set about equally well."""
    ok = runs.groupby("batch_size").train_acc.min() >= threshold
    return sorted(int(b) for b in ok[ok].index)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data.summary, data.measurements, INSTRUMENT, (*MEASURES, "pool_loss"))
    table = by_batch(runs, ("train_acc", "test_acc", "gap_acc", "train_loss", "test_loss", "gap_loss",
                                *MEASURES, "pool_loss"))
    curves = curves_table(data.history, ["batch_size"], ("acc",))
    n = n_train(runs)
    curves["panel"] = curves.panel.where(curves.batch_size != n, f"B={n} (full)")
    return {"runs": runs, "by_batch": table, "correlations": correlations(runs, MEASURES), "curves": curves}


def _per_batch(runs: pd.DataFrame, column: str) -> tuple[list[int], list[pd.Series]]:
    sizes = sorted(int(b) for b in runs.batch_size.unique())
    return sizes, [runs[runs.batch_size == b][column] for b in sizes]


def _means(table: pd.DataFrame, column: str, unit: tuple[float, str] = (1.0, "")) -> str:
    scale, suffix = unit
    return ", ".join(f"B={row.label}: {row[column] * scale:.3g}{suffix}" for _, row in table.iterrows())


def _fmt(iv, unit: tuple[float, str] = (1.0, "")) -> str:
    """An interval scaled to ``unit`` = (scale, suffix)."""
    return iv.format(3, *unit)


# Accuracies are fractions in the store; findings state them in percent, and differences of
# them (gaps, slopes) in percentage points.
PERCENT, POINTS = (100.0, "%"), (100.0, " pp")


def _trend_finding(runs, table, column: str, claim: str, direction: str, slope_unit=(1.0, ""),
                   mean_unit=(1.0, "")) -> Finding:
    sizes, groups = _per_batch(runs, column)
    slope, verdict = trend(sizes, groups, direction)
    return Finding(claim, SOURCE, f"slope {_fmt(slope, slope_unit)} per doubling of B over B in {sizes}; "
                                  f"means {_means(table, column, mean_unit)}", verdict)


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, table, corr = tables["runs"], tables["by_batch"], tables["correlations"]
    out = [_trend_finding(runs, table, "gap_acc", "the generalization gap (train acc - test acc, positive = "
                          "train above test) grows with B", "increasing", POINTS, POINTS)]
    fitted = fitted_batches(runs, s["fit_threshold"])
    sub = runs[runs.batch_size.isin(fitted)]
    sizes, groups = _per_batch(sub, "gap_acc")
    slope, verdict = trend(sizes, groups, "increasing")  # inconclusive when fewer than 2 B fitted
    out.append(Finding(
        f"among batch sizes that fit the training set (every seed ends with train acc >= "
        f"{s['fit_threshold']:.0%}), the gap grows with B", SOURCE,
        f"slope {_fmt(slope, POINTS)} per doubling of B over the fitted B in {sizes}" if len(sizes) >= 2 else
        f"no trend: fewer than 2 batch sizes fitted (fitted: {sizes or 'none'})", verdict))
    out.append(_trend_finding(runs, table, "test_acc", "final test accuracy falls as B grows", "decreasing",
                              POINTS, PERCENT))
    for name in MEASURES:
        out.append(_trend_finding(runs, table, name, f"sharpness ({NAMES[name]}) grows with B", "increasing"))
    for _, row in corr.iterrows():
        iv = f"{row.rho:.2f} [{row.rho_low:.2f}, {row.rho_high:.2f}]" if np.isfinite(row.rho_low) else \
            f"{row.rho:.2f} (no interval)"
        out.append(Finding(
            f"sharpness ({NAMES[row.measure]}) predicts the gap: runs with sharper minima have larger gaps",
            f"{SOURCE}; disputed by {SOURCE_WEAK}",
            f"Spearman rho across {int(row.runs)} runs (all B and seeds, one lr) {iv}, 95% bootstrap over runs",
            verdict_from_interval(row.rho_low, row.rho_high, 1)))
    out.append(_sweet_spot(runs, table))
    return out


def _sweet_spot(runs: pd.DataFrame, table: pd.DataFrame) -> Finding:
    """The B with the best mean test accuracy, against the largest B (large batches generalize worse)."""
    best = sweet_spot(table)
    largest = table.loc[table.batch_size.idxmax()]
    best_acc = runs[runs.batch_size == best.batch_size].test_acc
    diff, verdict = compare(best_acc, runs[runs.batch_size == largest.batch_size].test_acc, "greater")
    ranked = table.sort_values("test_acc", ascending=False)
    runner = ""
    if len(ranked) > 1:
        second = ranked.iloc[1]
        gap = compare(best_acc, runs[runs.batch_size == second.batch_size].test_acc, "greater")[0]
        runner = f"; runner-up B={second.label}, {_fmt(gap, POINTS)} behind"
    return Finding(
        "there is a sweet spot below the largest batch: the B with the best test accuracy beats the largest B",
        SOURCE, f"sweet spot B={best.label}: test acc {_fmt(interval(best_acc), PERCENT)}; largest "
                f"B={largest.label}: {largest.test_acc * 100:.3g}%; difference {_fmt(diff, POINTS)}{runner}",
        verdict)


def notes(tables, s: dict) -> list[str]:
    table, runs = tables["by_batch"], tables["runs"]
    fitted = fitted_batches(runs, s["fit_threshold"])
    first, last = table.iloc[0], table.iloc[-1]
    return [
        "The gap is train accuracy minus test accuracy at the last epoch (train accuracy from a full pass in "
        "evaluation mode), so a positive gap means the model does better on its training rows.",
        f"Every B trains for {s['epochs']} epochs at the same learning rate: B={first.label} makes "
        f"{int(first.steps):,} updates, B={last.label} only {int(last.steps):,}. Final train accuracy: "
        f"{_means(table, 'train_acc', PERCENT)}. Keskar et al. compare runs that fit the training set about "
        "equally; a B that has not fitted it has a smaller gap for a reason unrelated to sharpness (batch sizes "
        f"that fitted, every seed >= {s['fit_threshold']:.0%}: {fitted or 'none'}).",
        f"Sharpness is measured on the same {s['pool']} training rows for every run (fewer if N is smaller), on "
        f"the final parameters: lambda_max by power iteration (at most {s['power_iterations']} Hessian-vector "
        f"products), the trace from {s['hutchinson_probes']} Rademacher probes, and epsilon-sharpness = "
        "100 (max f(theta + delta) - f(theta)) / (1 + f(theta)) over the box "
        f"|delta_i| <= {s['eps']:g} (|theta_i| + 1), maximised by {s['ascent_steps']} steps of projected "
        f"sign-gradient ascent from the centre and {s['ascent_starts'] - 1} random point(s) of the box "
        "(a lower bound of the maximum).",
        f"The loss on that pool at the end: {_means(table, 'pool_loss')}. Where the cross-entropy is near zero "
        "the softmax saturates and its Hessian shrinks with it, so a run trained further down in loss looks "
        "flatter whatever its test accuracy: compare the sharpness of runs at similar loss.",
        "The correlations pool every run of this study, which share one learning rate, so they show whether "
        "sharpness follows the gap as B changes. Andriushchenko et al. (2023) found that across learning "
        "rates and other settings sharpness tracks the learning rate rather than the gap: a positive rho "
        "here does not make sharpness a predictor in general.",
    ]
