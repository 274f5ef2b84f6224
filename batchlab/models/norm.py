"""Batch norm and ghost batch norm for the built-in models (Ioffe & Szegedy 2015; Hoffer et al.
2017).

In training mode a layer's features are normalised by the mean and (biased) variance of the
batch's real rows (``mask``; padded rows of a partial batch never enter the statistics), over
every axis but the last (rows, and positions for a convolution); then scaled and shifted by
the trained ``scale`` and ``shift``. *Ghost* batch norm takes those statistics over virtual
sub-batches of ``ghost_size`` consecutive rows instead, each normalised by its own (a last,
smaller ghost batch where B is not a multiple); a ghost size of at least B is plain batch norm.

Running statistics (the model state, used in evaluation mode) follow PyTorch's convention:
``running = (1 - MOMENTUM) running + MOMENTUM batch`` with MOMENTUM = 0.1 and the *unbiased*
variance. Why PyTorch's 0.1 rather than Keras' 0.01: at large B an epoch has few updates, and
the running statistics must catch up within the run for evaluation to mean anything. With
ghost batches, the batch statistic is the mean over ghost batches (weighted by real rows) of
their means and unbiased variances: the statistics the training normalisation used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MOMENTUM = 0.1
EPS = 1e-5


def norm_init(features: int) -> tuple[dict, dict]:
    """A norm layer's trained parameters (scale 1, shift 0) and running statistics (0, 1)."""
    return ({"scale": jnp.ones((features,)), "shift": jnp.zeros((features,))},
            {"mean": jnp.zeros((features,)), "var": jnp.ones((features,))})


def batch_norm(h: jax.Array, params: dict, stats: dict, *, train: bool, mask: jax.Array | None,
               ghost_size: int | None = None) -> tuple[jax.Array, dict]:
    """Normalise ``h`` (rows first, features last) and return it with the new running statistics.

    ``mask``: 1 for the batch's real rows (None: all); ``ghost_size``: rows per ghost batch
    (None: the whole batch).
    """
    if not train:
        out = (h - stats["mean"]) * jax.lax.rsqrt(stats["var"] + EPS)
        return out * params["scale"] + params["shift"], stats
    rows = h.shape[0]
    size = rows if ghost_size is None else min(ghost_size, rows)
    ghosts = -(-rows // size)
    pad = ghosts * size - rows
    weight = jnp.ones((rows,), h.dtype) if mask is None else mask.astype(h.dtype)
    # (ghosts, size, positions..., features), and each row's weight broadcast to match
    grouped = jnp.pad(h, [(0, pad)] + [(0, 0)] * (h.ndim - 1)).reshape(ghosts, size, *h.shape[1:])
    w = jnp.pad(weight, (0, pad)).reshape(ghosts, size, *([1] * (h.ndim - 1)))
    axes = tuple(range(1, grouped.ndim - 1))
    count = jnp.sum(w * jnp.ones_like(grouped), axis=axes, keepdims=True)
    mean = jnp.sum(w * grouped, axis=axes, keepdims=True) / jnp.maximum(count, 1.0)
    var = jnp.sum(w * jnp.square(grouped - mean), axis=axes, keepdims=True) / jnp.maximum(count, 1.0)
    out = ((grouped - mean) * jax.lax.rsqrt(var + EPS)).reshape(ghosts * size, *h.shape[1:])[:rows]
    out = out * params["scale"] + params["shift"]

    count, mean, var = (a.reshape(ghosts, -1) for a in (count, mean, var))
    unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
    share = count / jnp.maximum(jnp.sum(count, axis=0), 1.0)
    batch_mean, batch_var = jnp.sum(share * mean, axis=0), jnp.sum(share * unbiased, axis=0)
    new_stats = {"mean": (1 - MOMENTUM) * stats["mean"] + MOMENTUM * batch_mean,
                 "var": (1 - MOMENTUM) * stats["var"] + MOMENTUM * batch_var}
    return out, new_stats
