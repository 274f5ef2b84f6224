"""The convex study's analysis (``science.md`` section 6): per run, the distance and loss gap to
softmax regression's exact optimum over the last epochs; their means and 95% intervals per
batch size; the noise-ball law fitted on a log-log scale; the findings (``studies/convex.py``
declares the runs; ``analysis/softmax_optimum.py`` solves for the optimum).

Nothing here imports the engine: DataFrames in, numbers and tables out.
Reference: e.g. Bottou, Curtis & Nocedal, "Optimization methods for large-scale machine
learning", SIAM Review 2018, section 4 (constant-step SGD converges to a neighbourhood).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.findings import (Finding, Interval, bootstrap_ratio, interval, interval_table, trend,
                                        verdict_from_interval)
from batchlab.analysis.softmax_optimum import CONSTANTS
from batchlab.analysis.study_data import StudyData

SOURCE = "constant-step SGD on a convex problem (Bottou, Curtis & Nocedal 2018; Mishchenko et al. 2020)"
INSTRUMENT = "convex_optimum_gap"


def noise_term(lr: np.ndarray | float, trace_sigma: np.ndarray | float, batch_size: np.ndarray | float,
               n: np.ndarray | float) -> np.ndarray:
    """Gradient-noise level of constant-lr SGD: lr tr(Sigma)/B x (N - B)/(N - 1) (zero at B = N).

    tr(Sigma)/B x (N-B)/(N-1) is the variance of a batch-mean gradient drawn without
    replacement (``science.md`` section 4); lr scales it into a step.
    """
    b = np.asarray(batch_size, float)
    return np.asarray(lr, float) * np.asarray(trace_sigma, float) / b * (n - b) / (np.asarray(n, float) - 1)


def per_run(measurements: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its settings and the mean over its checkpoint epochs of distance,
    squared distance and loss gap, with the optimum's constants and the noise term."""
    keep = ["distance", "sq_distance", "loss_gap", "null_component"]
    grouped = measurements.groupby("run_id")
    table = grouped[keep].mean().join(grouped[list(CONSTANTS)].first()).join(grouped.epoch.agg(["min", "max", "count"])
                                                                       .add_prefix("checkpoint_epochs_"))
    runs = summary.set_index("run_id")[["group", "batch_size", "lr", "seed", "epochs", "steps"]]
    table = runs.join(table, how="inner").reset_index()
    table["b_over_n"] = table.batch_size / table.n_train
    table["noise_term"] = noise_term(table.lr, table.trace_sigma, table.batch_size, table.n_train)
    table["time_constants"] = table.steps * table.lr * table.mu  # updates x lr x mu: transient decays as e^-this
    return table.sort_values(["batch_size", "seed"]).reset_index(drop=True)


def by_batch(runs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: mean and 95% t-interval over seeds of distance, squared distance, loss gap,
    and the distance relative to the smallest batch size's mean distance."""
    def before(group: pd.DataFrame) -> dict:
        first = group.iloc[0]
        return {"b_over_n": first.b_over_n, "seeds": len(group), "epochs": int(first.epochs),
                "updates": int(group.steps.min()), "time_constants": float(group.time_constants.min()),
                "noise_term": first.noise_term}

    def geometric(group: pd.DataFrame) -> dict:
        # Geometric mean and its interval (a t-interval of log2 values, mapped back): the scale the
        # log-log fit works on, and positive, so it can be drawn on a log axis.
        iv = interval(np.log2(group.sq_distance))
        return {"sq_distance_geo": 2 ** iv.mean, "sq_distance_geo_low": 2 ** iv.low,
                "sq_distance_geo_high": 2 ** iv.high}

    table = interval_table(runs, "batch_size", ("distance", "sq_distance", "loss_gap"), before=before,
                           after=geometric)
    table["relative_distance"] = table.distance / table.distance.iloc[0]
    return table


def loglog_fit(runs: pd.DataFrame) -> tuple[Interval, str, float]:
    """Slope of log2 E||Theta - Theta*||^2 against log2(noise term) over the runs with B < N.

    The slope is fitted to the per-B means of log2(sq_distance) (geometric means over seeds)
    by :func:`batchlab.analysis.findings.trend` (bootstrap over seeds within each B); the
    claim tested is that the squared distance grows with the noise term. Returns (slope
    interval, verdict, intercept of the fitted line in log2 units).
    """
    noisy = runs[runs.noise_term > 0]
    xs = sorted(noisy.noise_term.unique())
    groups = [np.log2(noisy[noisy.noise_term == x].sq_distance.to_numpy()) for x in xs]
    slope, verdict = trend(xs, groups, "increasing")
    means = np.array([g.mean() for g in groups])
    intercept = float(means.mean() - slope.mean * np.log2(xs).mean()) if len(xs) else float("nan")
    return slope, verdict, intercept


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    measurements = data.measurements[data.measurements.instrument == INSTRUMENT]
    runs = per_run(measurements, data.summary)
    table = by_batch(runs)
    slope, verdict, intercept = loglog_fit(runs)
    best = runs.iloc[:1][list(CONSTANTS)].reset_index(drop=True)
    law = table[table.noise_term > 0].assign(slope=slope.mean, slope_low=slope.low, slope_high=slope.high,
                                             intercept=intercept)
    return {"runs": runs, "by_batch": table, "noise_law": law, "optimum": best}


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, table = tables["runs"], tables["by_batch"]
    sizes = [int(b) for b in table.batch_size]
    n = int(tables["optimum"].n_train.iloc[0])

    def per_b(column: str) -> list[np.ndarray]:
        return [np.log10(runs[runs.batch_size == b][column].to_numpy()) for b in sizes]

    out = []
    slope, verdict = trend(sizes, per_b("distance"), "decreasing")
    out.append(Finding("the distance to the optimum over the last epochs shrinks as B grows", SOURCE,
                       f"slope of log10 ||Theta - Theta*|| {slope.format(3)} decades per doubling of B over "
                       f"B in {sizes} (mean of the last {s['last_epochs']} epochs per run)", verdict))
    small, full = runs[runs.batch_size == sizes[0]].distance, runs[runs.batch_size == n].distance
    if len(full):
        ratio = bootstrap_ratio(full, small)
        threshold = s["threshold"]
        verdict = verdict_from_interval(ratio.low - threshold, ratio.high - threshold, -1)
        out.append(Finding(f"full-batch GD (B=N={n}) reaches the optimum: its distance is below "
                           f"{threshold:.0%} of the B={sizes[0]} distance", SOURCE,
                           f"distance at B=N {interval(full).format(3)}, at B={sizes[0]} {interval(small).format(3)}; "
                           f"ratio {ratio.format(3)} (bootstrap), threshold {threshold:g}", verdict))
    slope, verdict = trend(sizes, per_b("loss_gap"), "decreasing")
    out.append(Finding("the loss gap L(Theta) - L(Theta*) shrinks as B grows", SOURCE,
                       f"slope of log10 loss gap {slope.format(3)} decades per doubling of B; gap at "
                       f"B={sizes[0]} {interval(runs[runs.batch_size == sizes[0]].loss_gap).format(3)} nats",
                       verdict))
    slope, verdict, _ = loglog_fit(runs)
    inside = "inside" if slope.low <= 1 <= slope.high else "outside"
    out.append(Finding("the squared distance grows with the noise level lr tr(Sigma)/B x (N-B)/(N-1) "
                       "(the with-replacement law says in proportion, log-log slope 1)", SOURCE,
                       f"log-log slope {slope.format(3)} over the {len(tables['noise_law'])} batch sizes "
                       f"with B < N; 1 lies {inside} the interval", verdict))
    return out


def notes(tables, s: dict) -> list[str]:
    best, table = tables["optimum"].iloc[0], tables["by_batch"]
    out = [
        f"The exact optimum: L-BFGS then Newton steps in float64 on the same mean cross-entropy "
        f"(residual gradient norm {best.grad_norm_star:.1e}), L(Theta*) = {best.loss_star:.6f} nats, "
        f"||Theta*|| = {best.theta_star_norm:.3f}, training accuracy {best.accuracy_star:.1%}. Distances are "
        "taken between class-centred parameters: softmax ignores a shift common to all classes, and SGD from "
        "zero never makes one.",
        f"Curvature at Theta*: mu = {best.mu:.4f}, L = {best.l_max:.4f} (condition number "
        f"{best.l_max / best.mu:.0f}); tr(Sigma) = {best.trace_sigma:.4f}. Every batch size made at least "
        f"{int(table.updates.min()):,} updates, i.e. at least {table.time_constants.min():.1f} time constants "
        f"1/(lr mu) of the slowest direction: the start's influence has shrunk by "
        f"exp(-{table.time_constants.min():.1f}) = {math.exp(-table.time_constants.min()):.1e}, and what remains "
        "is SGD's stationary noise ball.",
        "Checkpoints are taken at the end of epochs. With reshuffling every epoch each sample is used exactly "
        "once per epoch, so epoch-end iterates sit closer to Theta* than SGD with replacement would "
        "(Mishchenko, Khaled & Richtarik, NeurIPS 2020), and the log-log slope of the noise law can exceed 1.",
    ]
    gd = table[table.noise_term == 0]
    if len(gd):
        gd = gd.iloc[0]
        transient = best.theta_star_norm * math.exp(-gd.time_constants)
        rounding = float(np.spacing(np.float32(best.theta_star_max_abs))) / (s["lr"] * best.mu)
        out.append(f"At B = N every seed runs the same GD (same zero start, the whole set each step). Its distance "
                   f"{gd.distance:.1e} is set by the larger of two limits: what is left of the start, about "
                   f"||Theta*|| exp(-updates lr mu) = {transient:.1e}, and float32 rounding: GD stops moving once "
                   f"a step lr mu d falls below the float32 spacing of the largest parameter, near d = {rounding:.1e}.")
    return out
