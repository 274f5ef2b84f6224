"""The convex case, "tug-of-war" (``science.md`` section 6): GD reaches the optimum, SGD hovers.

Problem: softmax regression (batchlab's ``logreg``: zero init, batch-mean cross-entropy, no
L2 term) on Brownlee's ``blobs``, standardized. Unregularised softmax regression has a
finite optimum only when no direction separates the classes; the three blobs overlap
(cluster_std 2: the optimum classifies about 83% of the training rows), so Theta* exists
and is unique on the class-centred subspace, while ``iris``, ``wine``, ``digits`` and
``breast_cancer`` are (close to) separable and their loss keeps falling as ||Theta|| grows.
Standardizing only improves the conditioning (Hessian condition number about 38 instead of
about 1,600 on the raw blobs), so plain GD settles within a few thousand updates.

Runs: plain SGD (no momentum) at one constant learning rate for every B in ``batch_sizes``
and ``fractions`` x N (B = N is full-batch GD), several seeds (the seed only changes the
data order: every run starts at zero). Each B trains until it has made at least ``updates``
updates and ``min_epochs`` epochs, so every run is past its transient (it decays like
exp(-updates x lr x mu), mu the smallest curvature at the optimum). Measured on the saved
parameters of the last ``last_epochs`` epochs, in float64 against the exact optimum
(L-BFGS + Newton on the same training loss, cached per dataset): the distance
||Theta - Theta*|| and the loss gap L(Theta) - L(Theta*). Claims: the distance and the gap
shrink as B grows, the distance vanishes at B = N, and the squared distance grows with the
noise level lr tr(Sigma)/B x (N - B)/(N - 1) (tr(Sigma) at Theta*).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab import budget
from batchlab.analysis import convex
from batchlab.analysis.findings import Finding, bootstrap_ratio, interval, trend, verdict_from_interval
from batchlab.studies.base import Checkpoint, CheckpointInstrument, FigureSpec, Grid, Study, StudyData

SOURCE = "constant-step SGD on a convex problem (Bottou, Curtis & Nocedal 2018; Mishchenko et al. 2020)"
INSTRUMENT = "convex_optimum_gap"
_OPTIMA: dict[str, convex.Optimum] = {}  # dataset fingerprint -> exact optimum (solved once per process)


def dataset(s: dict):
    """The training data every grid of the study uses (loaded the way the runner loads it)."""
    from batchlab.data import load_dataset, resolve_data_config

    return load_dataset(resolve_data_config(s["data"], standardize=True))


def optimum(data) -> convex.Optimum:
    """The exact optimum of ``data``'s training loss, solved once per dataset and process."""
    key = data.fingerprint()
    if key not in _OPTIMA:
        _OPTIMA[key] = convex.solve_optimum(data.x_train, data.y_train, data.num_classes)
    return _OPTIMA[key]


def batch_sizes(s: dict, n: int) -> list[int]:
    """``batch_sizes`` below N, then each fraction of N (rounded), in increasing order."""
    sizes = {int(b) for b in s["batch_sizes"] if int(b) < n} | {max(1, round(f * n)) for f in s["fractions"]}
    return sorted(sizes)


def epochs_for(s: dict, n: int, b: int) -> int:
    """Enough epochs for at least ``updates`` updates (ceil(N/B) per epoch) and ``min_epochs``."""
    return max(s["min_epochs"], s["last_epochs"], math.ceil(s["updates"] / budget.steps_per_epoch(n, b)))


def _label(b: int, n: int) -> str:
    return f"B={b}" + (" (GD)" if b == n else "")


def grids(s: dict) -> list[Grid]:
    data = dataset(s)
    optimum(data)  # fails here, before any training, when the data have no finite optimum
    n = data.n_train
    return [Grid(_label(b, n), dict(data=s["data"], model="logreg", standardize=True, batch_size=b,
                                    epochs=epochs_for(s, n, b), lr=s["lr"], seeds=s["seeds"]))
            for b in batch_sizes(s, n)]


def measure(cp: Checkpoint) -> list[dict]:
    """Distance and loss gap to the exact optimum of one saved checkpoint (float64 numpy)."""
    theta = np.vstack([np.asarray(cp.params["w"], np.float64), np.asarray(cp.params["b"], np.float64)[None]])
    best = optimum(cp.dataset)
    return [convex.checkpoint_record(theta, best, convex.augment(cp.dataset.x_train), cp.dataset.y_train)]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    """One instrument per batch size: the last ``last_epochs`` epochs differ between batch sizes."""
    n = dataset(s).n_train
    out = []
    for b in batch_sizes(s, n):
        last = epochs_for(s, n, b)
        out.append(CheckpointInstrument(INSTRUMENT, tuple(range(last - s["last_epochs"] + 1, last + 1)), measure,
                                        grids=(_label(b, n),)))
    return out


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    measurements = data.measurements[data.measurements.instrument == INSTRUMENT]
    runs = convex.per_run(measurements, data.summary)
    table = convex.by_batch(runs)
    slope, verdict, intercept = convex.loglog_fit(runs)
    best = runs.iloc[:1][list(convex.CONSTANTS)].reset_index(drop=True)
    law = table[table.noise_term > 0].assign(slope=slope.mean, slope_low=slope.low, slope_high=slope.high,
                                             intercept=intercept)
    return {"runs": runs, "by_batch": table, "noise_law": law, "optimum": best}


def _title(s: dict, tables) -> str:
    n = int(tables["optimum"].n_train.iloc[0])
    return (f"{s['data']} (standardized, N={n}), softmax regression (logreg), "
            f"plain SGD lr {s['lr']:g}, {s['seeds']} seeds")


def _distance(tables, s):
    from batchlab.plots.convex import distance_figure

    return distance_figure(tables["by_batch"], s["last_epochs"],
                           title="Distance and loss gap to the exact optimum vs B/N: " + _title(s, tables))


def _law(tables, s):
    from batchlab.plots.convex import noise_law_figure

    gd = tables["by_batch"][tables["by_batch"].noise_term == 0]
    return noise_law_figure(tables["noise_law"], s["last_epochs"], title="Noise-ball law: " + _title(s, tables),
                            excluded=gd.sq_distance.iloc[0] if len(gd) else None)


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
    slope, verdict, _ = convex.loglog_fit(runs)
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


STUDY = Study(
    name="convex",
    question="On a convex problem, does full-batch GD reach the optimum while constant-lr SGD hovers in a "
             "noise ball that shrinks as B grows?",
    source=SOURCE,
    defaults=dict(data="blobs", lr=0.5, batch_sizes=(1, 4, 16, 64), fractions=(0.25, 0.5, 1.0), seeds=5,
                  updates=4000, min_epochs=30, last_epochs=10, threshold=0.01),
    quick=dict(lr=1.0, batch_sizes=(1, 16), fractions=(1.0,), seeds=2, updates=1000, min_epochs=12),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("distance_to_optimum", _distance, "by_batch"),
             FigureSpec("noise_ball_law", _law, "noise_law")),
    findings=findings,
    checkpoints=checkpoints,
    notes=notes,
    minutes=(0.5, 0.1),
)
