"""Gradient noise of one set of saved parameters (``science.md`` section 3.2): what the
gradient-norm study's checkpoint instrument and the ``noise`` command (``cli/noise.py``) measure;
and the pool of training rows that every measurement on saved parameters uses (:func:`pool_rows`).

On a pool of training rows: per-sample gradients -> ||G||^2, tr(Sigma), B_simple, mean
per-sample norm, mean pairwise cosine; then, for every batch size, ``trials`` random batches
(with and/or without replacement) and the Euclidean norm of their gradient for the batch-sum
and batch-mean loss, compared with the theory E||g_B||^2 = ||G||^2 + tr(Sigma)/B (mean;
x B^2 for the sum; x (P-B)/(P-1) on the noise term without replacement). Also the update
size ||lr g_B|| and the sharpness (Hessian lambda_max, Hutchinson trace) of the full loss.
Training code (JAX, the engine's loss) is imported where it is used, so that a study module
can name :func:`pool_rows` without loading JAX.
"""

from __future__ import annotations

import time

import numpy as np

from batchlab.errors import BatchlabError

SAMPLING = {"without": (False,), "with": (True,), "both": (False, True)}
DEFAULT_POOL = 4096  # rows: the P x P Gram matrix stays at 128 MiB (float64) whatever N is


def pool_rows(n_train: int, pool: int, seed: int) -> np.ndarray:
    """Sorted indices of the P = min(N, pool) training rows whose per-sample gradients are
    taken: all rows when the pool covers the training set, else a random draw seeded by ``seed``."""
    size = min(n_train, pool)
    if size >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, size, replace=False))


def check_stateless(net) -> None:
    """Checkpoints keep parameters only; a model with non-trained state (batch-norm statistics)
    would be measured with that state missing, so it is refused before anything trains."""
    import jax
    import jax.numpy as jnp

    if getattr(net, "backend", "jax") != "jax":
        return
    state = jax.eval_shape(net.init, jax.ShapeDtypeStruct((2,), jnp.uint32))[1]
    if jax.tree.leaves(state):
        raise BatchlabError("gradient statistics at checkpoints are not available for models with non-trained "
                            "state (batch-norm statistics): checkpoints keep parameters only")


def measure_checkpoint(net, params, x, y, sizes: list[int], *, trials: int, reductions=("sum", "mean"),
                       sampling: str = "without", seed: int = 0, lr: float = 0.01, sharpness: bool = True
                       ) -> tuple[dict, list[dict]]:
    """Gradient statistics and the Monte-Carlo batch-gradient norms of one set of parameters."""
    from batchlab.instruments import gradients

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
        row.update(_sharpness(net, params, x, y, seed))
    return row, points


def _sharpness(net, params, x, y, seed: int) -> dict[str, float]:
    """Hessian lambda_max (power iteration) and trace (Hutchinson, with its standard error) of
    the pool's mean loss."""
    import jax.numpy as jnp

    from batchlab.models.losses import masked_loss_sum
    from batchlab.instruments import hessian

    size = x.shape[0]

    def loss(p):
        return masked_loss_sum(net, p, {}, x, y, jnp.ones(size), train=False, key=None)[0] / size
    out = {"lambda_max": hessian.lambda_max(loss, params, iterations=300, tol=1e-5, seed=seed)}
    out["hessian_trace"], out["hessian_trace_se"] = hessian.hutchinson_trace(loss, params, samples=50, seed=seed)
    return out
