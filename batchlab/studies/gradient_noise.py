"""Shen's gradient-norm study (``science.md`` section 3.2), measured at checkpoints of a real run.

Train with the given settings, keep the parameters at ``at_epochs``, and at each one:
per-sample gradients over a pool of training rows -> ||G||^2, tr(Sigma), B_simple, mean
per-sample norm, mean pairwise cosine; then, for every batch size, ``trials`` random batches
(with and/or without replacement) and the Euclidean norm of their gradient for the batch-sum
and batch-mean loss, compared with the theory E||g_B||^2 = ||G||^2 + tr(Sigma)/B (mean;
x B^2 for the sum; x (P-B)/(P-1) on the noise term without replacement). Also the update
size ||lr g_B|| and the sharpness (Hessian lambda_max, Hutchinson trace) of the full loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from batchlab.api import prepare, run_configs
from batchlab.paths import check_writable_dir
from batchlab.config import FULL
from batchlab.parsing import parse_batch_sizes
from batchlab.errors import BatchlabError
from batchlab.figure_helpers import FigureDrawer
from batchlab.engine.step import masked_loss_sum
from batchlab.instruments import gradients, hessian
from batchlab.store import Store

SAMPLING = {"without": (False,), "with": (True,), "both": (False, True)}
DEFAULT_POOL = 4096  # rows: the P x P Gram matrix stays at 128 MiB (float64) whatever N is


@dataclass
class NoiseOutput:
    table: pd.DataFrame  # one row per checkpoint
    points: pd.DataFrame  # one row per checkpoint x sampling x reduction x B
    files: list[Path]


def check_stateless(net) -> None:
    """Checkpoints keep parameters only; a model with non-trained state (batch-norm statistics)
    would be measured with that state missing, so it is refused before anything trains."""
    if getattr(net, "backend", "jax") != "jax":
        return
    state = jax.eval_shape(net.init, jax.ShapeDtypeStruct((2,), jnp.uint32))[1]
    if jax.tree.leaves(state):
        raise BatchlabError("gradient statistics at checkpoints are not available for models with non-trained "
                            "state (batch-norm statistics): checkpoints keep parameters only")


def run(out: str | Path, *, data: str = "digits", model: str = "mlp", batch_size=64, lr: float = 0.01,
        momentum: float = 0.0, at_epochs=(2, 30), batch_sizes="1:1024", trials: int = 1000,
        reductions=("sum", "mean"), sampling: str = "without", pool: int | None = None, seed: int = 0,
        hidden=(50,), sharpness: bool | None = None, epochs: int | None = None, db=None, progress=None,
        task: str | None = None, label: str = "label", drawer: FigureDrawer | None = None) -> NoiseOutput:
    at_epochs = tuple(sorted({int(e) for e in at_epochs}))
    if not at_epochs or at_epochs[0] < 0:
        raise BatchlabError(f"checkpoint epochs must be >= 0, got {at_epochs}")
    if trials < 2:
        raise BatchlabError(f"trials must be >= 2, got {trials}")
    if sampling not in SAMPLING:
        raise BatchlabError(f"unknown sampling {sampling!r}: choose without, with or both")
    for r in reductions:
        if r not in ("sum", "mean"):
            raise BatchlabError(f"unknown reduction {r!r}: choose sum and/or mean")
    epochs = max(max(at_epochs), 1) if epochs is None else epochs
    if max(at_epochs) > epochs:
        raise BatchlabError(f"checkpoint epoch {max(at_epochs)} is after the run's last epoch {epochs}")
    configs, dataset, net = prepare(data, model, batch_size=batch_size, epochs=epochs, lr=lr,
                                    momentum=momentum, seeds=[seed], hidden=hidden, activation="relu",
                                    init="he_uniform", dropout=0.0, standardize=None, test_fraction=0.2,
                                    label=label, task=task)
    rows, sizes = _pool_and_sizes(dataset.n_train, pool, batch_sizes, seed)
    check_stateless(net)
    if sharpness is None:  # Hessian-vector products are the JAX engine's; a PyTorch model skips them
        sharpness = getattr(net, "backend", "jax") == "jax"
    check_writable_dir(out, "output folder")
    result = run_configs(configs, dataset, net, db=db, force=True, progress=progress, checkpoints=at_epochs)
    run_result = result.runs[0]
    missing = [e for e in at_epochs if e not in run_result.checkpoints]
    if missing:
        raise BatchlabError(f"the run stopped ({run_result.status}) before checkpoint epoch(s) {missing}")
    x, y = jnp.asarray(dataset.x_train[rows]), jnp.asarray(dataset.y_train[rows])

    table, points = [], []
    for epoch in at_epochs:
        row, rows_of_points = measure_checkpoint(net, run_result.checkpoints[epoch], x, y, sizes, trials=trials,
                                                 reductions=reductions, sampling=sampling, seed=seed + epoch, lr=lr,
                                                 sharpness=sharpness)
        table.append({"epoch": epoch, **row})
        points += [{"epoch": epoch, **p} for p in rows_of_points]
        if db is not None:
            with Store(db) as store:
                store.write_measurements(run_result.run_id, "gradient_statistics", epoch, [row])
                store.write_measurements(run_result.run_id, "batch_gradient_norms", epoch, rows_of_points)

    table_frame, points_frame = pd.DataFrame(table), pd.DataFrame(points)
    files = write(Path(out), table_frame, points_frame,
                  title=f"{dataset.name} {model}, trained at B={configs[0].batch_size}, lr={lr}",
                  loss_unit="squared target units" if dataset.task == "regression" else "nats", drawer=drawer)
    return NoiseOutput(table_frame, points_frame, files)


def _pool_and_sizes(n: int, pool: int | None, batch_sizes, seed: int) -> tuple[np.ndarray, list[int]]:
    """The pool's training rows and the batch sizes to measure, checked against N and the pool
    before the run trains (``full`` = the whole pool)."""
    if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 2):
        raise BatchlabError(f"pool must be an integer >= 2 rows, got {pool!r}")
    size = min(n, DEFAULT_POOL if pool is None else pool)
    sizes = [size if b == FULL else b for b in parse_batch_sizes(batch_sizes)]
    too_big = [b for b in sizes if b > size]
    if too_big:
        whole = f" (all N={n} rows)" if size == n else f" (of N={n})"
        raise BatchlabError(f"batch size(s) {too_big} exceed the pool of {size} training rows{whole}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size, replace=False)) if size < n else np.arange(n)
    return rows, sizes


def measure_checkpoint(net, params, x, y, sizes: list[int], *, trials: int, reductions=("sum", "mean"),
                       sampling: str = "without", seed: int = 0, lr: float = 0.01, sharpness: bool = True
                       ) -> tuple[dict, list[dict]]:
    """Gradient statistics and the Monte-Carlo batch-gradient norms of one set of parameters."""
    size = x.shape[0]
    start = time.perf_counter()
    k = gradients.gram_matrix(net, params, {}, x, y)
    stats = gradients.statistics_from_gram(k)
    t_grads = time.perf_counter() - start
    start = time.perf_counter()
    points = []
    for replace in SAMPLING[sampling]:
        draws = gradients.monte_carlo(k, sizes, trials, seed, replace=replace)
        for reduction in reductions:
            theory = gradients.expected_sq_norm(stats["grad_sq"], stats["trace"], np.array(sizes), size,
                                                replace=replace, reduction=reduction)
            for b, th in zip(sizes, theory):
                sq = draws[b] / (1.0 if reduction == "sum" else b * b)
                norms = np.sqrt(np.maximum(sq, 0.0))
                points.append({"sampling": "with" if replace else "without", "reduction": reduction,
                               "batch_size": b, "mean_norm": norms.mean(), "std_norm": norms.std(ddof=1),
                               "mean_sq_norm": sq.mean(), "theory_sq_norm": th,
                               "update_size": lr * norms.mean(), "update_size_std": lr * norms.std(ddof=1),
                               # RMS = sqrt(mean ||g_B||^2) is compared with the theory sqrt(E||g_B||^2) (the mean
                               # norm lies below it by Jensen); quantiles give a spread that stays positive on log axes.
                               "rms_norm": np.sqrt(sq.mean()),
                               **dict(zip(("q05_norm", "q50_norm", "q95_norm"),
                                          np.quantile(norms, [0.05, 0.5, 0.95])))})
    row = {**stats, "gradient_seconds": t_grads, "monte_carlo_seconds": time.perf_counter() - start}
    # Exponent k of E||batch-sum gradient||^2 ~ B^k (1: noise dominates, 2: the mean gradient does).
    first = [p for p in points if (p["sampling"], p["reduction"]) == (points[0]["sampling"], points[0]["reduction"])]
    summed = [p["mean_sq_norm"] * (1 if p["reduction"] == "sum" else p["batch_size"] ** 2) for p in first]
    row["sq_norm_exponent"] = gradients.fitted_exponent([p["batch_size"] for p in first], summed)
    if sharpness:
        def loss(p):
            return masked_loss_sum(net, p, {}, x, y, jnp.ones(size), train=False, key=None)[0] / size
        row["lambda_max"] = hessian.lambda_max(loss, params, iterations=300, tol=1e-5, seed=seed)
        row["hessian_trace"], row["hessian_trace_se"] = hessian.hutchinson_trace(loss, params, samples=50, seed=seed)
    return row, points


def write(out: Path, table: pd.DataFrame, points: pd.DataFrame, title: str, loss_unit: str = "nats",
          drawer: FigureDrawer | None = None) -> list[Path]:
    """The two tables (CSV) and the figure (PNG + SVG; by ``drawer``'s helper processes, if given)."""
    drawer = drawer or FigureDrawer(helpers=0)
    out.mkdir(parents=True, exist_ok=True)
    table_path, points_path = out / "noise_table.csv", out / "noise_points.csv"
    table.to_csv(table_path, index=False)
    points.to_csv(points_path, index=False)
    figure = drawer.draw("batchlab.plots.gradient_noise:gradient_norm_figure", points, title, loss_unit,
                         path=out / "gradient_norm_vs_batch")
    return [table_path, points_path, *drawer.files([figure])[0]]
