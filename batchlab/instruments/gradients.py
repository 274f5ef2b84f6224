"""Gradient statistics at a checkpoint, from per-sample gradients (``science.md`` sections 3-4).

With per-sample gradients g_i (i = 1..P, a pool of training rows), G = mean_i g_i and
Sigma their covariance (population, 1/P):
- ``grad_sq`` = ||G||^2, ``trace`` = tr(Sigma) = mean_i ||g_i - G||^2,
  ``noise_scale`` = B_simple = tr(Sigma) / ||G||^2 (McCandlish et al. 2018);
- ``mean_sample_norm`` = mean_i ||g_i||; ``mean_cosine`` = mean over pairs i != j of
  cos(g_i, g_j), from ||sum_i u_i||^2 with u_i = g_i / ||g_i|| (no P^2 loop).

All of these follow from the Gram matrix K = [g_i . g_j]. The squared norm of a
batch's *summed* gradient is the sum of K over the batch's rows and columns, exact for the
sampled batch, so T trials x many batch sizes cost no backward pass at all.
Expected values: for the batch mean, E||g_B||^2 = ||G||^2 + tr(Sigma)/B, times (P-B)/(P-1)
on the noise term when drawing without replacement; for the batch sum multiply by B^2.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from batchlab.models.losses import masked_loss_sum, row_losses
from batchlab.models.base import Model

CHUNK = 256  # rows per vmapped per-sample-gradient pass: memory is CHUNK x parameters


def per_sample_gradients(model: Model, params, model_state, x, y, chunk: int = CHUNK) -> jax.Array:
    """Matrix (P, D) of flattened per-sample gradients of the loss, in bounded chunks."""
    if getattr(model, "backend", "jax") == "torch":  # a PyTorch model: torch.func computes them
        from batchlab.instruments.torch_gradients import per_sample_gradients as torch_rows

        return torch_rows(model, params, model_state, x, y, chunk)
    flat, unravel = ravel_pytree(params)

    def one(theta, xi, yi):
        loss, _ = masked_loss_sum(model, unravel(theta), model_state, xi[None], yi[None], jnp.ones(1),
                                  train=False, key=None)
        return loss

    grad_rows = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))
    n = x.shape[0]
    parts = [grad_rows(flat, x[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)]
    return jnp.concatenate(parts)


def statistics_from_gram(k) -> dict[str, float]:
    """||G||^2, tr(Sigma), B_simple, mean per-sample norm and mean pairwise cosine from K = [g_i . g_j].

    ||G||^2 = sum(K) / P^2; tr(Sigma) = mean_i ||g_i||^2 - ||G||^2 = trace(K) / P - ||G||^2.
    """
    k = np.asarray(k, np.float64)
    p = k.shape[0]
    grad_sq = float(k.sum() / p ** 2)
    trace = float(np.trace(k) / p - grad_sq)
    norms = np.sqrt(np.maximum(np.diag(k), 0.0))
    safe = np.maximum(norms, 1e-30)
    cosine = float(((k / safe[:, None] / safe[None, :]).sum() - p) / (p * (p - 1))) if p > 1 else float("nan")
    return {"grad_sq": grad_sq, "trace": trace, "noise_scale": trace / grad_sq if grad_sq > 0 else float("inf"),
            "mean_sample_norm": float(norms.mean()), "mean_cosine": cosine, "pool": p}


def gram_matrix(model: Model, params, model_state, x, y) -> np.ndarray:
    """K = [g_i . g_j] of the per-sample loss gradients (P x P, float64).

    Dense-layer models (``model.dense_taps``) factorize it layer by layer from the layer
    inputs a_i and the per-sample gradients d_i of the pre-activations (one forward and one
    backward pass over the pool): K = sum_l (A_l A_l^T + 1) * (D_l D_l^T). Other models go
    through the per-sample gradients: K = G G^T.
    """
    if model.dense_taps is None:
        g = per_sample_gradients(model, params, model_state, x, y)
        return np.asarray(jax.jit(lambda a: a @ a.T)(g), np.float64)
    return np.asarray(_factorized_gram(model)(params, model_state, x, y), np.float64)


@functools.lru_cache(maxsize=16)
def _factorized_gram(model: Model):
    """The compiled Gram computation of a dense-layer model (cached: compiled once per model)."""
    def gram(params, model_state, x, y):
        def total_loss(shifts):
            logits, inputs = model.dense_taps(params, model_state, x, shifts)
            return jnp.sum(row_losses(model.task, logits, y)[0]), inputs  # a sum: each row's shift gradient is that row's own d_i

        shapes = jax.eval_shape(lambda: _pre_activation_shapes(model, params, model_state, x))
        zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
        deltas, inputs = jax.grad(total_loss, has_aux=True)(zeros)
        return sum((a @ a.T + 1.0) * (d @ d.T) for a, d in zip(inputs, deltas))

    return jax.jit(gram)


def _pre_activation_shapes(model: Model, params, model_state, x):
    """Each dense layer's pre-activation (the next layer's input, or the logits); used for shapes."""
    logits, inputs = model.dense_taps(params, model_state, x, None)
    return [*inputs[1:], logits]


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


def batch_sq_norms(k: np.ndarray, index: np.ndarray, gather: bool | None = None) -> np.ndarray:
    """Squared norms of the given batches' *summed* gradients, exactly, from the Gram matrix.

    Small batches sum their B x B block of K; larger ones use row counts c (T x P):
    ||sum_{i in batch} g_i||^2 = c K c^T, one matrix product for all trials. NumPy, so no
    compilation per batch size. No Python loop per trial. ``gather``: which of the two (they
    round differently); by default chosen from ``index``'s size.
    """
    trials, batch_size = index.shape
    pool = k.shape[0]
    if trials * batch_size * batch_size <= _GATHER_LIMIT if gather is None else gather:
        return k[index[:, :, None], index[:, None, :]].sum(axis=(1, 2), dtype=np.float64)
    flat = (np.arange(trials)[:, None] * pool + index).ravel()
    counts = np.bincount(flat, minlength=trials * pool).reshape(trials, pool).astype(k.dtype)
    return np.einsum("tp,tp->t", counts @ k, counts, dtype=np.float64)


_GATHER_LIMIT = 1 << 21  # T * B^2 entries: above this one matrix product over row counts is faster


def monte_carlo(k, batch_sizes: list[int], trials: int, seed: int, *, replace: bool) -> dict[int, np.ndarray]:
    """For each B: the squared norms of ``trials`` random batches' summed gradients.

    K is used in float32 (sums accumulate in float64): the products' rounding (~1e-7
    relative) is far below the Monte-Carlo spread.
    """
    k = np.asarray(k, np.float32)
    rng = np.random.default_rng(seed)
    # Trials in chunks, so memory (about 24 bytes x chunk x pool) stays bounded however many
    # are asked for; the generator draws row after row, so the batches are those of one draw.
    chunk = max(1, TRIAL_BYTES // (24 * k.shape[0]))
    out = {}
    for b in batch_sizes:
        gather = trials * b * b <= _GATHER_LIMIT  # as for all the trials at once (same rounding)
        out[b] = np.concatenate([batch_sq_norms(k, draw_batches(rng, k.shape[0], b, min(chunk, trials - start),
                                                                replace=replace), gather)
                                 for start in range(0, trials, chunk)])
    return out


TRIAL_BYTES = 256 * 2 ** 20  # what one chunk of Monte-Carlo trials may take


def fitted_exponent(batch_sizes, values) -> float:
    """Slope of log(values) against log(B): 1 means linear growth, 2 quadratic."""
    x, y = np.log(np.asarray(batch_sizes, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else math.nan
