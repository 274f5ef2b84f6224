"""Keskar et al. (2017): large batches generalize worse and land in sharper minima
(``science.md`` sections 5 and 7).

MNIST-1D (4000 train / 1000 test, 40 features), MLP 40-256-256-10, Adam at one learning
rate for every batch size (as Keskar et al. did), B from 16 to the full training set, the
same number of epochs, several seeds. At the end of training, on a fixed pool of training
rows, three sharpness measures of the mean cross-entropy loss:
- ``lambda_max``: the largest Hessian eigenvalue, by power iteration on Hessian-vector products;
- ``hessian_trace``: tr(H) by Hutchinson's estimator E[v^T H v], v with independent +-1 entries;
- ``eps_sharpness``: Keskar's epsilon-sharpness (see :func:`epsilon_sharpness`).
Measured: final train/test accuracy and the gap (train - test) per B; each sharpness measure
per B; and how well each one ranks the runs by their gap (Spearman's rho, bootstrap over
runs), since Andriushchenko et al. (2023) found sharpness tracks the learning rate more than
generalization.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab.analysis import generalization as gen
from batchlab.analysis.curves import curves_table
from batchlab.analysis.findings import Finding, compare, interval, trend, verdict_from_interval
from batchlab.studies.base import Checkpoint, CheckpointInstrument, FigureSpec, Grid, Study, StudyData

SOURCE = "Keskar et al., ICLR 2017"
SOURCE_WEAK = "Andriushchenko et al., ICML 2023"
INSTRUMENT = "sharpness"
MEASURES = ("lambda_max", "hessian_trace", "eps_sharpness")
NAMES = {"lambda_max": "Hessian lambda_max", "hessian_trace": "Hessian trace",
         "eps_sharpness": "epsilon-sharpness"}
POOL_SEED = 0  # the pool of training rows is the same for every run, so runs are comparable


def pool_rows(n: int, size: int) -> np.ndarray:
    """The fixed pool of training rows the sharpness is measured on (the same for every run)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(POOL_SEED).choice(n, size, replace=False))


def measure_sharpness(cp: Checkpoint) -> list[dict]:
    """lambda_max, Hutchinson trace (with its standard error) and epsilon-sharpness of the
    pool's mean loss at one checkpoint."""
    import time

    import jax

    from batchlab.instruments.hessian import power_iteration, sharpness_programs  # training code: only here

    s = cp.settings
    start = time.perf_counter()
    rows = pool_rows(cp.dataset.n_train, s["pool"])
    x, y = cp.dataset.x_train[rows], cp.dataset.y_train[rows]
    params = cp.params
    hvp, quad_forms, sharpness = sharpness_programs(cp.model, s["ascent_steps"], s["ascent_starts"])
    dim = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    # Random vectors from NumPy: no small compiled programs for them.
    rng = np.random.default_rng(cp.config.seed)
    lam, used = power_iteration(lambda v: hvp(params, x, y, v), rng.normal(size=dim).astype(np.float32),
                                iterations=s["power_iterations"])
    probes = rng.choice(np.array([-1.0, 1.0], np.float32), size=(s["hutchinson_probes"], dim))
    forms = np.asarray(quad_forms(params, x, y, probes), np.float64)
    phi, base = sharpness(params, x, y, cp.config.seed, s["eps"])
    return [{"lambda_max": lam, "power_iterations": used, "hessian_trace": float(forms.mean()),
             "hessian_trace_se": float(forms.std(ddof=1) / np.sqrt(len(forms))), "eps_sharpness": float(phi),
             "pool_loss": float(base), "pool": len(rows), "seconds": time.perf_counter() - start}]


# ----------------------------------------------------------------------------- the study

def _train(s: dict) -> dict:
    return dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), optimizer=s["optimizer"], lr=s["lr"],
                momentum=s["momentum"], epochs=s["epochs"], seeds=s["seeds"], batch_size=list(s["batch_sizes"]))


def grids(s: dict) -> list[Grid]:
    return [Grid("batch sizes", _train(s))]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    return [CheckpointInstrument(INSTRUMENT, (s["epochs"],), measure_sharpness)]


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = gen.per_run(data.summary, data.measurements, INSTRUMENT, (*MEASURES, "pool_loss"))
    table = gen.by_batch(runs, ("train_acc", "test_acc", "gap_acc", "train_loss", "test_loss", "gap_loss",
                                *MEASURES, "pool_loss"))
    curves = curves_table(data.history, ["batch_size"], ("acc",))
    n = gen.n_train(runs)
    curves["panel"] = curves.panel.where(curves.batch_size != n, f"B={n} (full)")
    return {"runs": runs, "by_batch": table, "correlations": gen.correlations(runs, MEASURES), "curves": curves}


def _setup(s: dict, n: int | None = None) -> str:
    """The data, model and optimizer in words, for figure titles."""
    hidden = "-".join(str(h) for h in s["hidden"])
    momentum = f", momentum {s['momentum']:g}" if s["optimizer"] == "sgd" and s["momentum"] else ""
    rows = f" ({n} training rows)" if n else ""
    return (f"{s['data']}{rows}, MLP hidden {hidden}, {s['optimizer']} lr {s['lr']:g}{momentum}, "
            f"{s['epochs']} epochs for every B")


def _n(tables) -> int:
    return gen.n_train(tables["runs"])


def _accuracy_gap(tables, s):
    from batchlab.plots.generalization import accuracy_gap_figure

    return accuracy_gap_figure(tables["by_batch"],
                               f"Final accuracy and generalization gap vs batch size\n{_setup(s, _n(tables))}")


def _sharpness(tables, s):
    from batchlab.plots.generalization import sharpness_figure

    # The pool's loss beside the sharpness: near zero loss the cross-entropy Hessian vanishes.
    return sharpness_figure(tables["by_batch"], (*MEASURES, "pool_loss"), (
        f"Sharpness of the final parameters vs batch size ({s['pool']} training rows, "
        f"epsilon = {s['eps']:g})\n{_setup(s, _n(tables))}"))


def _sharpness_gap(tables, s):
    from batchlab.plots.generalization import sharpness_gap_figure

    labels = dict(zip(tables["by_batch"].batch_size, tables["by_batch"].label))
    return sharpness_gap_figure(tables["runs"], tables["correlations"], MEASURES, labels, (
        "Does sharpness predict the generalization gap? (one learning rate for all runs)\n"
        f"{_setup(s, _n(tables))}"))


def _curves(tables, s):
    from batchlab.plots.learning_curves import band_curves

    return band_curves(tables["curves"], "acc", ncols=len(s["batch_sizes"]), title=(
        f"Accuracy vs epoch for each batch size\n{_setup(s, _n(tables))}, {s['seeds']} seeds"))


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
    fitted = gen.fitted_batches(runs, s["fit_threshold"])
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
    best = gen.sweet_spot(table)
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
    fitted = gen.fitted_batches(runs, s["fit_threshold"])
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


STUDY = Study(
    name="generalization",
    question="How do the generalization gap and sharpness change with batch size, and where is the sweet spot?",
    source=f"{SOURCE}; {SOURCE_WEAK}",
    defaults=dict(data="mnist1d", hidden=(256, 256), optimizer="adam", lr=0.001, momentum=0.0, epochs=100, seeds=3,
                  batch_sizes=(16, 64, 256, 1024, "full"), pool=1000, eps=1e-3, ascent_steps=20, ascent_starts=2,
                  power_iterations=100, hutchinson_probes=32, fit_threshold=0.99),
    quick=dict(hidden=(64, 64), epochs=8, seeds=2, batch_sizes=(16, 256, "full"), pool=256, ascent_steps=5,
               power_iterations=30, hutchinson_probes=8),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("accuracy_gap_vs_batch", _accuracy_gap, "by_batch"),
             FigureSpec("sharpness_vs_batch", _sharpness, "by_batch"),
             FigureSpec("sharpness_vs_gap", _sharpness_gap, "runs"),
             FigureSpec("learning_curves_acc", _curves, "curves")),
    findings=findings,
    checkpoints=checkpoints,
    notes=notes,
    minutes=(2.5, 0.2),
)
