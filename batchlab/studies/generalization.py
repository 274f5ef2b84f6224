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
generalization (``analysis/generalization.py``).
"""

from __future__ import annotations

import numpy as np

from batchlab.analysis import generalization as analysis
from batchlab.analysis.generalization import INSTRUMENT, MEASURES
from batchlab.instruments.checkpoint import Checkpoint, CheckpointInstrument
from batchlab.studies.base import FigureSpec, Grid, Study
from batchlab.studies.gradient_noise import pool_rows

POOL_SEED = 0  # the pool of training rows is the same for every run, so runs are comparable


def measure_sharpness(cp: Checkpoint) -> list[dict]:
    """lambda_max, Hutchinson trace (with its standard error) and epsilon-sharpness of the
    pool's mean loss at one checkpoint."""
    import time

    import jax

    from batchlab.instruments.hessian import power_iteration, sharpness_programs  # training code: only here

    s = cp.settings
    start = time.perf_counter()
    rows = pool_rows(cp.dataset.n_train, s["pool"], POOL_SEED)
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


def _train(s: dict) -> dict:
    return dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), optimizer=s["optimizer"], lr=s["lr"],
                momentum=s["momentum"], epochs=s["epochs"], seeds=s["seeds"], batch_size=list(s["batch_sizes"]))


def grids(s: dict) -> list[Grid]:
    return [Grid("batch sizes", _train(s))]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    return [CheckpointInstrument(INSTRUMENT, (s["epochs"],), measure_sharpness)]


def _setup(s: dict, n: int | None = None) -> str:
    """The data, model and optimizer in words, for figure titles."""
    hidden = "-".join(str(h) for h in s["hidden"])
    momentum = f", momentum {s['momentum']:g}" if s["optimizer"] == "sgd" and s["momentum"] else ""
    rows = f" ({n} training rows)" if n else ""
    return (f"{s['data']}{rows}, MLP hidden {hidden}, {s['optimizer']} lr {s['lr']:g}{momentum}, "
            f"{s['epochs']} epochs for every B")


def _n(tables) -> int:
    return analysis.n_train(tables["runs"])


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


STUDY = Study(
    name="generalization",
    question="How do the generalization gap and sharpness change with batch size, and where is the sweet spot?",
    source=f"{analysis.SOURCE}; {analysis.SOURCE_WEAK}",
    defaults=dict(data="mnist1d", hidden=(256, 256), optimizer="adam", lr=0.001, momentum=0.0, epochs=100, seeds=3,
                  batch_sizes=(16, 64, 256, 1024, "full"), pool=1000, eps=1e-3, ascent_steps=20, ascent_starts=2,
                  power_iterations=100, hutchinson_probes=32, fit_threshold=0.99),
    quick=dict(hidden=(64, 64), epochs=8, seeds=2, batch_sizes=(16, 256, "full"), pool=256, ascent_steps=5,
               power_iterations=30, hutchinson_probes=8),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("accuracy_gap_vs_batch", _accuracy_gap, "by_batch"),
             FigureSpec("sharpness_vs_batch", _sharpness, "by_batch"),
             FigureSpec("sharpness_vs_gap", _sharpness_gap, "runs"),
             FigureSpec("learning_curves_acc", _curves, "curves")),
    findings=analysis.findings,
    checkpoints=checkpoints,
    notes=analysis.notes,
    minutes=(5.5, 0.45),
    limits=dict(eps=(1e-12, None), pool=(2, None), ascent_steps=(1, None), ascent_starts=(1, None),
                power_iterations=(1, None), hutchinson_probes=(1, None), fit_threshold=(0.0, 1.0)),
)
