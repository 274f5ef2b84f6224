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

from batchlab.analysis.findings import Finding, decided, interval_table, trend, verdict_from_interval, within
from batchlab.analysis.intervals import GEOMETRIC_T, Interval, geometric_t, none
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


DETERMINISTIC = ("at B = N every seed runs the same full-batch GD from the same zero start: one deterministic "
                 "computation, whose seeds differ only by float rounding")


def by_batch(runs: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: geometric mean and 95% t-interval on the log scale over seeds of distance,
    squared distance and loss gap (positive quantities), and the distance relative to the
    smallest batch size's. At B = N the seeds are not replicates (:data:`DETERMINISTIC`): no
    interval there, and the rounding spread is kept as ``rounding_spread`` (relative)."""
    def before(group: pd.DataFrame) -> dict:
        first = group.iloc[0]
        return {"b_over_n": first.b_over_n, "seeds": len(group), "epochs": int(first.epochs),
                "updates": int(group.steps.min()), "time_constants": float(group.time_constants.min()),
                "noise_term": first.noise_term}

    def rounding(group: pd.DataFrame) -> dict:
        return {"rounding_spread": float(np.ptp(group.distance) / group.distance.mean())}

    quantities = ("distance", "sq_distance", "loss_gap")
    table = interval_table(runs, "batch_size", {q: geometric_t for q in quantities}, before=before, after=rounding)
    gd = table.noise_term == 0
    for q in quantities:
        table.loc[gd, [f"{q}_low", f"{q}_high"]] = np.nan
    table.loc[~gd, "rounding_spread"] = np.nan
    table["relative_distance"] = table.distance / table.distance.iloc[0]
    return table


def loglog_fit(runs: pd.DataFrame) -> tuple[Interval, str, float]:
    """Slope of log2 E||Theta - Theta*||^2 against log2(noise term) over the runs with B < N.

    The slope is fitted to the per-B means of log2(sq_distance) (geometric means over seeds)
    by :func:`batchlab.analysis.findings.trend` (95% t with Welch-Satterthwaite degrees of
    freedom over the seeds of each B); the verdict is on "the squared distance grows with the
    noise term". Returns (slope interval, verdict, intercept of the fitted line in log2 units).
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
    out.append(decided("the distance to the optimum over the last epochs shrinks as B grows", SOURCE,
                       f"slope of log10 ‖θ − θ*‖ {slope.format(3)} decades per doubling of B over "
                       f"B in {sizes} (mean of the last {s['last_epochs']} epochs per run; 95% {slope.method})",
                       verdict, slope))
    small, full = runs[runs.batch_size == sizes[0]].distance, runs[runs.batch_size == n].distance
    if len(full):
        out.append(_full_batch_finding(full, small, n, sizes[0], s["threshold"]))
    slope, verdict = trend(sizes, per_b("loss_gap"), "decreasing")
    out.append(decided("the loss gap L(θ) − L(θ*) shrinks as B grows", SOURCE,
                       f"slope of log10 loss gap {slope.format(3)} decades per doubling of B (95% {slope.method}); "
                       f"gap at B={sizes[0]} {geometric_t(runs[runs.batch_size == sizes[0]].loss_gap).format(3)} nats "
                       "(geometric mean, 95% t on the log scale)", verdict, slope))
    slope, verdict, _ = loglog_fit(runs)
    law = (f"log-log slope {slope.format(3)} over the {len(tables['noise_law'])} batch sizes with B < N "
           f"(95% {slope.method})")
    out.append(decided("the squared distance grows with the noise level lr tr(Σ)/B × (N − B)/(N − 1)", SOURCE,
                       law, verdict, slope))
    band = s["slope_tolerance"]
    out.append(decided(f"the squared distance is proportional to the noise level, as the with-replacement law says: "
                       f"log-log slope 1 (equivalence: the interval within [{1 - band:g}, {1 + band:g}])", SOURCE,
                       law, within(slope, 1 - band, 1 + band), slope))
    return out


def _full_batch_finding(full: pd.Series, small: pd.Series, n: int, b_small: int, threshold: float) -> Finding:
    """B = N against the smallest B: is d_N / d_small below ``threshold``? d_N is one
    deterministic value (:data:`DETERMINISTIC`), so the ratio's interval is d_N over the
    interval of the smallest B's geometric mean distance."""
    d_full = float(full.mean())
    ref = geometric_t(small)
    if ref.given and ref.low > 0:
        ratio = Interval(d_full / ref.mean, d_full / ref.high, d_full / ref.low, ref.n, GEOMETRIC_T)
    else:
        ratio = none(d_full / ref.mean, ref.n, ref.why)
    spread = float(np.ptp(full) / d_full) if d_full > 0 else 0.0
    return decided(f"full-batch GD (B=N={n}) reaches the optimum: its distance is below {threshold:.0%} of the "
                   f"B={b_small} distance", SOURCE,
                   f"distance at B=N {d_full:.3g} ({DETERMINISTIC}: relative spread {spread:.1e}; no interval), at "
                   f"B={b_small} {ref.format(3)} (geometric mean, 95% t on the log scale); ratio {ratio.format(3)}, "
                   f"threshold {threshold:g}", verdict_from_interval(ratio.low - threshold, ratio.high - threshold, -1),
                   ratio)


def notes(tables, s: dict) -> list[str]:
    best, table = tables["optimum"].iloc[0], tables["by_batch"]
    out = [
        f"The exact optimum: L-BFGS then Newton steps in float64 on the same mean cross-entropy "
        f"(residual gradient norm {best.grad_norm_star:.1e}), L(θ*) = {best.loss_star:.6f} nats, "
        f"‖θ*‖ = {best.theta_star_norm:.3f}, training accuracy {best.accuracy_star:.1%}. Distances are "
        "taken between class-centred parameters: softmax ignores a shift common to all classes, and SGD from "
        "zero never makes one.",
        f"Curvature at θ*: μ = {best.mu:.4f}, L = {best.l_max:.4f} (condition number "
        f"{best.l_max / best.mu:.0f}); tr(Σ) = {best.trace_sigma:.4f}. Every batch size made at least "
        f"{int(table.updates.min()):,} updates, i.e. at least {table.time_constants.min():.1f} time constants "
        f"1/(lr μ) of the slowest direction: the start's influence has shrunk by "
        f"exp(−{table.time_constants.min():.1f}) = {math.exp(-table.time_constants.min()):.1e}, and what remains "
        "is SGD's stationary noise ball.",
        "Checkpoints are taken at the end of epochs. With reshuffling every epoch each sample is used exactly "
        "once per epoch, so epoch-end iterates sit closer to θ* than SGD with replacement would "
        "(Mishchenko, Khaled & Richtarik, NeurIPS 2020), and the log-log slope of the noise law can exceed 1: the "
        "proportionality finding tests the law's own slope, the growth finding only its direction.",
    ]
    gd = table[table.noise_term == 0]
    if len(gd):
        gd = gd.iloc[0]
        transient = best.theta_star_norm * math.exp(-gd.time_constants)
        rounding = float(np.spacing(np.float32(best.theta_star_max_abs))) / (s["lr"] * best.mu)
        out.append(f"At B = N every seed runs the same GD (same zero start, the whole set each step). Its distance "
                   f"{gd.distance:.1e} is set by the larger of two limits: what is left of the start, about "
                   f"‖θ*‖ exp(−updates lr μ) = {transient:.1e}, and float32 rounding: GD stops moving once "
                   f"a step lr μ d falls below the float32 spacing of the largest parameter, near d = {rounding:.1e}.")
    return out
