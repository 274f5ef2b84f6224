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
from batchlab.analysis.findings import (INCONCLUSIVE, PROPORTION_DIFFERENCE, Finding, decided, interval,
                                        interval_table, proportion, trend, unmet, verdict_from_interval)
from batchlab.analysis.intervals import geometric_t
from batchlab.analysis.trends import RankTest, spearman, spearman_permutation
from batchlab.analysis.selection import best_versus
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


def method(column: str):
    """The interval that respects ``column``'s range: accuracies in [0, 1], the accuracy gap in
    [-1, 1], losses (positive) on the log scale, the rest (sharpness, the loss gap) a t-interval."""
    if column.endswith("acc"):
        return proportion
    if column == "gap_acc":
        return lambda values: interval(values, PROPORTION_DIFFERENCE)
    if column.endswith("loss") and column != "gap_loss":
        return geometric_t
    return interval


def by_batch(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per batch size: estimate and 95% interval over seeds of each of ``columns`` (``name``,
    ``name_low``, ``name_high``; :func:`method`), the number of seeds and the updates made."""
    n = n_train(runs)
    return interval_table(runs, "batch_size", {c: method(c) for c in columns}, before=lambda group: {
        "label": batch_label(int(group.batch_size.iloc[0]), n), "seeds": len(group),
        "steps": int(group.steps.max())})


def correlations(runs: pd.DataFrame, measures: Sequence[str], target: str = "gap_acc") -> pd.DataFrame:
    """Per sharpness measure: Spearman's rho between the per-batch-size means of the measure and
    of ``target``, with exact permutation p-values (:func:`spearman_permutation`).

    The unit is the batch size: seeds of one B share everything but their seed, and all of the
    association between sharpness and gap runs through B, so the runs are not independent
    evidence (a bootstrap over runs treated 15 runs as 15 points). ``runs``: the runs to use
    (the batch sizes that fit the training set, :func:`fit_precondition`)."""
    means = runs.groupby("batch_size")[[*measures, target]].mean()
    rows = []
    for name in measures:
        test = spearman_permutation(means[name], means[target])
        rows.append({"measure": name, "target": target, "rho": test.rho, "p_greater": test.p_greater,
                     "p_less": test.p_less, "points": test.n, "runs": int(runs[name].notna().sum()),
                     "rho_runs": spearman(runs[name], runs[target]) if len(runs) > 1 else np.nan})
    return pd.DataFrame(rows, columns=["measure", "target", "rho", "p_greater", "p_less", "points", "runs",
                                       "rho_runs"])


def rank_verdict(test: RankTest, level: float = 0.025) -> tuple[str, str]:
    """(verdict, reason) on "positively associated": agrees when the one-sided permutation p of
    rho > 0 is at most ``level``, disagrees when that of rho < 0 is; with n points no p is
    below 1/n!, so too few points make it inconclusive with that reason."""
    if test.n < 2 or not math.isfinite(test.p_greater):
        return INCONCLUSIVE, f"{test.n} batch size(s) with values: no rank correlation"
    if 1 / math.factorial(test.n) > level:
        return INCONCLUSIVE, (f"with {test.n} batch sizes no ranking is significant at {level:.1%} one-sided "
                              f"(the smallest p is 1/{test.n}! = {1 / math.factorial(test.n):.3f})")
    if test.p_greater <= level:
        return "agrees", ""
    if test.p_less <= level:
        return "disagrees", ""
    return INCONCLUSIVE, ""


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
    fitted, why = fit_precondition(runs, s)  # with fewer than 2 fitted B, all B (the findings say why)
    return {"runs": runs, "by_batch": table, "correlations": correlations(runs if why else fitted, MEASURES),
            "curves": curves}


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


def fit_precondition(runs: pd.DataFrame, s: dict, needed: int = 2) -> tuple[pd.DataFrame, str]:
    """(the runs of the batch sizes that fit the training set, why a finding cannot be decided
    on them — '' when ``needed`` or more fitted). Keskar et al. compare runs that fit the training
    set about equally; a B that has not fitted it has a smaller gap, a lower test accuracy and
    other sharpness for a reason that has nothing to do with its batch size's minima."""
    fitted = fitted_batches(runs, s["fit_threshold"])
    left_out = sorted(set(int(b) for b in runs.batch_size) - set(fitted))
    if len(fitted) >= needed:
        return runs[runs.batch_size.isin(fitted)], ""
    accs = runs.groupby("batch_size").train_acc.min()
    return runs[runs.batch_size.isin(fitted)], (
        f"{'only ' + str(len(fitted)) if fitted else 'no'} batch size(s) fit the training set (every seed ≥ "
        f"{s['fit_threshold']:.0%} train "
        f"accuracy; lowest train accuracy " + ", ".join(f"B={b}: {accs[b]:.1%}" for b in left_out) +
        f"), {needed} needed to compare batch sizes that fit it")


def _trend_finding(runs, table, column: str, claim: str, direction: str, s: dict, slope_unit=(1.0, ""),
                   mean_unit=(1.0, "")) -> Finding:
    """The trend of ``column`` over the batch sizes that fit the training set; where fewer than
    2 did, the trend over all of them is shown for information and the finding says why it is
    not decided."""
    fitted, why = fit_precondition(runs, s)
    sizes, groups = _per_batch(runs if why else fitted, column)
    slope, verdict = trend(sizes, groups, direction)
    left_out = sorted(set(int(b) for b in runs.batch_size) - set(int(b) for b in fitted.batch_size))
    over = f"over all B in {sizes}, for information" if why else f"over the fitted B in {sizes}" + (
        f" (left out, not fitted: B={left_out})" if left_out else "")
    finding = decided(claim + ", among batch sizes that fit the training set", SOURCE,
                      f"slope {_fmt(slope, slope_unit)} per doubling of B {over} (95% {slope.method}); means "
                      f"{_means(table, column, mean_unit)}", verdict, slope)
    return unmet(finding, why)


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, table, corr = tables["runs"], tables["by_batch"], tables["correlations"]
    out = [_trend_finding(runs, table, "gap_acc", "the generalization gap (train acc − test acc, positive = "
                          "train above test) grows with B", "increasing", s, POINTS, POINTS),
           _trend_finding(runs, table, "test_acc", "final test accuracy falls as B grows", "decreasing", s,
                          POINTS, PERCENT)]
    for name in MEASURES:
        out.append(_trend_finding(runs, table, name, f"sharpness ({NAMES[name]}) grows with B", "increasing", s))
    _, why = fit_precondition(runs, s, needed=2)
    for _, row in corr.iterrows():
        test = RankTest(row.rho, int(row.points), row.p_greater, row.p_less)
        verdict, reason = rank_verdict(test)
        finding = Finding(
            f"sharpness ({NAMES[row.measure]}) predicts the gap: batch sizes with sharper minima have larger gaps",
            f"{SOURCE}; disputed by {SOURCE_WEAK}",
            f"Spearman ρ across the {test.n} {'' if why else 'fitted '}batch sizes' means {test.rho:.2f}, exact "
            f"permutation p = "
            f"{test.p_greater:.3f} (ρ > 0) / {test.p_less:.3f} (ρ < 0); across the {int(row.runs)} runs "
            f"(not independent: seeds of one B share it) {row.rho_runs:.2f}", verdict, reason)
        out.append(unmet(finding, why))
    out.append(_sweet_spot(runs, table, s))
    return out


def _sweet_spot(runs: pd.DataFrame, table: pd.DataFrame, s: dict) -> Finding:
    """The fitted B below the largest with the best mean test accuracy, against the largest
    fitted B: its difference with a Welch interval at level 1 - 0.05/m, m the batch sizes it was
    chosen from (:func:`batchlab.analysis.selection.best_versus`), so the choice is accounted for.
    A best B at the smallest of the grid is an edge, not a sweet spot: no interior optimum is shown."""
    claim = ("there is a sweet spot below the largest batch: the B with the best test accuracy beats the largest "
             "B (the choice among the batch sizes accounted for)")
    fitted, why = fit_precondition(runs, s, needed=3)
    if why:
        return Finding(claim, SOURCE, "no sweet spot computed", INCONCLUSIVE, why)
    sizes = sorted(int(b) for b in fitted.batch_size.unique())
    label = dict(zip(table.batch_size, table.label))
    best, diff = best_versus({b: fitted[fitted.batch_size == b].test_acc.to_numpy() for b in sizes}, sizes[-1])
    def acc(b: int) -> str:
        return _fmt(proportion(fitted[fitted.batch_size == b].test_acc), PERCENT)

    measured = (f"sweet spot B={label[best]}: test acc {acc(best)}; largest fitted B={label[sizes[-1]]}: "
                f"{acc(sizes[-1])}; difference "
                f"{_fmt(diff, POINTS)} ({diff.method})")
    finding = decided(claim, SOURCE, measured, verdict_from_interval(diff.low, diff.high, 1), diff)
    if best == sizes[0]:
        return unmet(finding, f"the best B ({label[best]}) is the smallest of the grid: an edge, not an interior "
                              "sweet spot (a grid with smaller B would be needed)")
    return finding


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
        f"that fitted, every seed ≥ {s['fit_threshold']:.0%}: {fitted or 'none'}).",
        f"Sharpness is measured on the same {s['pool']} training rows for every run (fewer if N is smaller), on "
        f"the final parameters: λ_max by power iteration (at most {s['power_iterations']} Hessian-vector "
        f"products), the trace from {s['hutchinson_probes']} Rademacher probes, and ε-sharpness = "
        "100 (max f(θ + δ) − f(θ)) / (1 + f(θ)) over the box "
        f"|δᵢ| ≤ {s['eps']:g} (|θᵢ| + 1), maximised by {s['ascent_steps']} steps of projected "
        f"sign-gradient ascent from the centre and {s['ascent_starts'] - 1} random point(s) of the box "
        "(a lower bound of the maximum).",
        f"The loss on that pool at the end: {_means(table, 'pool_loss')}. Where the cross-entropy is near zero "
        "the softmax saturates and its Hessian shrinks with it, so a run trained further down in loss looks "
        "flatter whatever its test accuracy: compare the sharpness of runs at similar loss.",
        "The correlations are between the fitted batch sizes' means (the seeds of one B are not independent "
        "evidence of an association that runs through B), tested exactly over every ordering of the batch "
        "sizes; all runs share one learning rate, so they show whether sharpness follows the gap as B changes."
        " Andriushchenko et al. (2023) found that across learning "
        "rates and other settings sharpness tracks the learning rate rather than the gap: a positive ρ "
        "here does not make sharpness a predictor in general.",
    ]
