"""Gradient statistics at a checkpoint, from per-sample gradients (``science.md`` sections 3-4).

With per-sample gradients g_i (i = 1..P, a pool of training rows), G = mean_i g_i and
Sigma their covariance (population, 1/P):
- ``grad_sq`` = ||G||^2, ``trace`` = tr(Sigma) = mean_i ||g_i - G||^2,
  ``noise_scale`` = B_simple = tr(Sigma) / ||G||^2 (McCandlish et al. 2018);
- ``mean_sample_norm`` = mean_i ||g_i||; ``mean_cosine`` = mean over pairs i != j of
  cos(g_i, g_j), from ||sum_i u_i||^2 with u_i = g_i / ||g_i|| (no P^2 loop).

Batch gradients are studied through the Gram matrix K = [g_i . g_j]: the squared norm of a
batch's *summed* gradient is the sum of K over the batch's rows and columns, exact for the
sampled batch, so T trials x many batch sizes cost no backward pass at all.
Expected values: for the batch mean, E||g_B||^2 = ||G||^2 + tr(Sigma)/B, times (P-B)/(P-1)
on the noise term when drawing without replacement; for the batch sum multiply by B^2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from batchlab.engine.step import masked_loss_sum
from batchlab.models.base import Model

CHUNK = 256  # rows per vmapped per-sample-gradient pass: memory is CHUNK x parameters


def per_sample_gradients(model: Model, params, model_state, x, y, chunk: int = CHUNK) -> jax.Array:
    """Matrix (P, D) of flattened per-sample gradients of the loss, in bounded chunks."""
    flat, unravel = ravel_pytree(params)

    def one(theta, xi, yi):
        loss, _ = masked_loss_sum(model, unravel(theta), model_state, xi[None], yi[None], jnp.ones(1),
                                  train=False, key=None)
        return loss

    grad_rows = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))
    n = x.shape[0]
    parts = [grad_rows(flat, x[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)]
    return jnp.concatenate(parts)


def gradient_statistics(grads: jax.Array) -> dict[str, float]:
    """||G||^2, tr(Sigma), B_simple, mean per-sample norm and mean pairwise cosine."""
    g = np.asarray(grads, np.float64)
    p = g.shape[0]
    mean = g.mean(axis=0)
    grad_sq = float(mean @ mean)
    trace = float(np.mean(np.sum((g - mean) ** 2, axis=1)))
    norms = np.linalg.norm(g, axis=1)
    units = g / np.maximum(norms, 1e-30)[:, None]
    total = units.sum(axis=0)
    cosine = float((total @ total - p) / (p * (p - 1))) if p > 1 else float("nan")
    return {"grad_sq": grad_sq, "trace": trace, "noise_scale": trace / grad_sq if grad_sq > 0 else float("inf"),
            "mean_sample_norm": float(norms.mean()), "mean_cosine": cosine, "pool": p}


def gram(grads: jax.Array) -> jax.Array:
    """K = G G^T (P x P) in float32."""
    return jax.jit(lambda g: g @ g.T)(grads)


def expected_sq_norm(grad_sq: float, trace: float, batch: np.ndarray, pool: int, *, replace: bool,
                     reduction: str) -> np.ndarray:
    """E||g_B||^2 for the batch mean (or sum), drawing B rows of the pool with or without replacement."""
    batch = np.asarray(batch, np.float64)
    factor = 1.0 if replace else (pool - batch) / max(pool - 1, 1)
    mean_sq = grad_sq + trace / batch * factor
    return mean_sq * batch ** 2 if reduction == "sum" else mean_sq


def draw_batches(rng: np.random.Generator, pool: int, batch_size: int, trials: int, *, replace: bool) -> np.ndarray:
    """Row indices (trials, B) of random batches from a pool of ``pool`` rows."""
    if replace:
        return rng.integers(0, pool, size=(trials, batch_size))
    keys = rng.random((trials, pool))  # a random subset = the B smallest of P random keys
    if batch_size == pool:
        return np.broadcast_to(np.arange(pool), (trials, pool))
    return np.argpartition(keys, batch_size, axis=1)[:, :batch_size]


def batch_sq_norms(k: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Squared norms of the given batches' *summed* gradients, exactly, from the Gram matrix.

    Small batches sum their B x B block of K; larger ones use row counts c (T x P):
    ||sum_{i in batch} g_i||^2 = c K c^T, one matrix product for all trials. NumPy, so no
    compilation per batch size. No Python loop per trial.
    """
    trials, batch_size = index.shape
    pool = k.shape[0]
    if batch_size * batch_size <= pool:
        return k[index[:, :, None], index[:, None, :]].sum(axis=(1, 2))
    counts = np.zeros((trials, pool))
    np.add.at(counts, (np.repeat(np.arange(trials), batch_size), index.ravel()), 1.0)
    return np.einsum("tp,tp->t", counts @ k, counts)


def monte_carlo(k, batch_sizes: list[int], trials: int, seed: int, *, replace: bool) -> dict[int, np.ndarray]:
    """For each B: the squared norms of ``trials`` random batches' summed gradients."""
    k = np.asarray(k, np.float64)
    rng = np.random.default_rng(seed)
    return {b: batch_sq_norms(k, draw_batches(rng, k.shape[0], b, trials, replace=replace)) for b in batch_sizes}


def fitted_exponent(batch_sizes, values) -> float:
    """Slope of log(values) against log(B): 1 means linear growth, 2 quadratic."""
    x, y = np.log(np.asarray(batch_sizes, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else math.nan
