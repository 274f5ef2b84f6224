"""Generalization gap and sharpness vs batch size, from stored runs (``science.md`` sections 5, 7).

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

from batchlab.analysis.findings import BOOTSTRAP, Interval, interval_columns, interval_table

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
