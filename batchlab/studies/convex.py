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
(L-BFGS + Newton on the same training loss, cached per dataset; ``analysis/softmax_optimum.py``):
the distance ||Theta - Theta*|| and the loss gap L(Theta) - L(Theta*). Claims (``analysis/convex.py``):
the distance and the gap shrink as B grows, the distance vanishes at B = N, and the squared
distance grows with the noise level lr tr(Sigma)/B x (N - B)/(N - 1) (tr(Sigma) at Theta*).
"""

from __future__ import annotations

import math

import numpy as np

from batchlab import budget
from batchlab.analysis import convex as analysis
from batchlab.analysis.convex import INSTRUMENT
from batchlab.analysis.softmax_optimum import Optimum, augment, checkpoint_record, solve_optimum
from batchlab.instruments.checkpoint import Checkpoint, CheckpointInstrument
from batchlab.studies.base import FigureSpec, Grid, Study

_OPTIMA: dict[str, Optimum] = {}  # dataset fingerprint -> exact optimum (solved once per process)


def dataset(s: dict):
    """The training data every grid of the study uses (loaded the way the runner loads it)."""
    from batchlab.data import load_dataset, resolve_data_config

    return load_dataset(resolve_data_config(s["data"], standardize=True))


def optimum(data) -> Optimum:
    """The exact optimum of ``data``'s training loss, solved once per dataset and process."""
    key = data.fingerprint()
    if key not in _OPTIMA:
        _OPTIMA[key] = solve_optimum(data.x_train, data.y_train, data.num_classes)
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
    return [checkpoint_record(theta, best, augment(cp.dataset.x_train), cp.dataset.y_train)]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    """One instrument per batch size: the last ``last_epochs`` epochs differ between batch sizes."""
    n = dataset(s).n_train
    out = []
    for b in batch_sizes(s, n):
        last = epochs_for(s, n, b)
        out.append(CheckpointInstrument(INSTRUMENT, tuple(range(last - s["last_epochs"] + 1, last + 1)), measure,
                                        grids=(_label(b, n),)))
    return out


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


STUDY = Study(
    name="convex",
    question="On a convex problem, does full-batch GD reach the optimum while constant-lr SGD hovers in a "
             "noise ball that shrinks as B grows?",
    source=analysis.SOURCE,
    defaults=dict(data="blobs", lr=0.5, batch_sizes=(1, 4, 16, 64), fractions=(0.25, 0.5, 1.0), seeds=5,
                  updates=4000, min_epochs=30, last_epochs=10, threshold=0.01, slope_tolerance=0.25),
    quick=dict(lr=1.0, batch_sizes=(1, 16), fractions=(1.0,), seeds=2, updates=1000, min_epochs=12),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("distance_to_optimum", _distance, "by_batch"),
             FigureSpec("noise_ball_law", _law, "noise_law")),
    findings=analysis.findings,
    checkpoints=checkpoints,
    notes=analysis.notes,
    minutes=(0.55, 0.2),
    limits=dict(fractions=(1e-9, 1.0), updates=(1, None), min_epochs=(1, None), last_epochs=(1, "min_epochs"),
                threshold=(0.0, 1.0), slope_tolerance=(0.0, None)),
)
