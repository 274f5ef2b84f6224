"""The dropout key a model gets for some rows of a batch: random draws indexed by batch row.

A batch's gradient may be computed whole, as micro-batches, or as two halves of alternate rows
(``engine/gradients.py``); all three must give the same dropout masks. The step's key is
``fold_in(dropout_seed key, step)``; the model receives a *row-wise* key (:func:`row_key`)
that knows which rows of the batch it is looking at (first row, stride). A draw of shape
``(n, ...)`` gives row i of the part the bits that row ``first + stride * i`` of the batch gets
in a whole-batch draw (threefry counters are (batch row, position within the row)), so any
split of the batch sees exactly the whole batch's masks. This holds for draws whose leading
axis is the batch's rows (dropout on activations, as in every built-in model); a draw with no
axis (a scalar) is shared by all parts; a draw whose leading axis is something else (a
weight-shaped mask) is not split-invariant. ``fold_in`` and ``split`` of the key keep its rows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.extend.random import define_prng_impl, threefry2x32_p


def _inner_key(data: jax.Array) -> jax.Array:
    return jax.random.wrap_key_data(data[:2], impl="threefry2x32")


def _rowwise_seed(seed: jax.Array) -> jax.Array:
    data = jax.random.key_data(jax.random.key(seed, impl="threefry2x32"))
    return jnp.concatenate([data, jnp.array([0, 1], jnp.uint32)])


def _rowwise_split(data: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    keys = jax.random.key_data(jax.random.split(_inner_key(data), shape))
    return jnp.concatenate([keys, jnp.broadcast_to(data[2:], (*shape, 2))], axis=-1)


def _rowwise_fold_in(data: jax.Array, value) -> jax.Array:
    return jnp.concatenate([jax.random.key_data(jax.random.fold_in(_inner_key(data), value)), data[2:]])


def _rowwise_bits(data: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    """Threefry bits whose counter for element (i, j...) is (batch row first + stride * i,
    flat position j within the row): the same bits for a row whichever part holds it."""
    rows = shape[0] if shape else 1
    per_row = math.prod(shape[1:]) if shape else 1
    flat = jax.lax.iota(jnp.uint32, rows * per_row)
    row = data[2] + data[3] * (flat // per_row) if shape else jnp.zeros_like(flat)
    high, low = (b.reshape(shape) for b in threefry2x32_p.bind(data[0], data[1], row, flat % per_row))
    if bit_width == 64:
        return (high.astype(jnp.uint64) << 32) | low.astype(jnp.uint64)
    bits = high ^ low
    return bits if bit_width == 32 else bits.astype({8: jnp.uint8, 16: jnp.uint16}[bit_width])


# key data: [threefry key (2 words), first batch row, row stride]
ROWWISE = define_prng_impl(key_shape=(4,), seed=_rowwise_seed, split=_rowwise_split, random_bits=_rowwise_bits,
                           fold_in=_rowwise_fold_in, name="batchlab_rowwise", tag="rw")


def row_key(key: jax.Array | None, first_row, stride: int = 1) -> jax.Array | None:
    """The dropout key a model gets for the batch rows ``first_row + stride * i``.

    ``key`` is the step's raw threefry key (uint32[2]); ``None`` stays ``None`` (no dropout).
    See the module docstring: random draws made with it are indexed by batch row, so any
    split of the batch sees the whole batch's dropout masks.
    """
    if key is None:
        return None
    rows = jnp.stack([jnp.asarray(first_row, jnp.uint32), jnp.asarray(stride, jnp.uint32)])
    return jax.random.wrap_key_data(jnp.concatenate([jnp.asarray(key, jnp.uint32), rows]), impl=ROWWISE)
