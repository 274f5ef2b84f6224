"""A batch's loss and gradient, computed whole, as micro-batches or as two halves.

A batch's gradient is computed in one of three ways: the whole batch in one pass, a
sequence of micro-batches of consecutive rows (``--micro-batch``, gradient accumulation),
or two halves of alternate rows side by side (for instruments that need the two-batch
estimate, ``instruments/step/noise_scale.py``). All three are *the same computation*, split
differently, and give the same loss sum, correct count, gradient sum and new model state
(up to float rounding), because:

- **Mask**: ``Batch.mask`` marks the real rows; every path sums per-example losses times
  the mask of the rows it holds, so padded rows (a partial last batch, or the padding that
  makes the rows divide into micro-batches or halves) contribute nothing.
- **Dropout key**: every part gets the whole batch's dropout masks for its rows
  (``engine/rowkey.py``).
- **Model state** (e.g. batch-norm running statistics): every part starts from the step's
  state, and the new state is the mean of the parts' new states weighted by their real
  rows (integer leaves rounded). The whole batch is one part, so its new state is what
  the model returned. The state changes once per optimizer step in every path, and a
  state that moves by the batch mean (a running mean) moves exactly as for the whole
  batch. Statistics a model computes *within* the batch in training mode (batch norm's
  normalisation) are per part: that part of a model is not split-invariant, by nature.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from batchlab.engine.rowkey import row_key
from batchlab.models.base import Model
from batchlab.models.losses import masked_loss_sum


class Batch(NamedTuple):
    """A batch as row indices into the training set plus a mask of real (not padded) rows."""

    index: jax.Array  # (B,) int32
    mask: jax.Array  # (B,) float32, 1 for real rows


class BatchGradient(NamedTuple):
    loss_sum: jax.Array
    correct: jax.Array
    grad_sum: Any  # gradient of the loss *sum* over the batch's real rows
    model_state: Any
    first_half: Any = None  # (gradient sum, rows) of the batch's first half, when split


def weighted_state(state_sum, rows, like):
    """The mean model state from ``state_sum`` (sum of rows x state over the parts) and the
    number of real ``rows``; integer leaves are rounded back to their type."""
    def leaf(total, template):
        mean = total / rows
        return (jnp.round(mean) if jnp.issubdtype(template.dtype, jnp.integer) else mean).astype(template.dtype)
    return jax.tree.map(leaf, state_sum, like)


def scale_state(state, rows):
    """``rows`` x each leaf of ``state``, in float32 (a term of ``weighted_state``'s sum)."""
    return jax.tree.map(lambda a: rows * a.astype(jnp.float32), state)


def part_gradient(model: Model, params, model_state, data, index, mask, key, first_row, stride: int):
    """Loss sum, correct count, gradient sum and new model state of the batch rows held by
    one part (``index``/``mask``, batch rows ``first_row + stride * i``)."""
    x, y = data
    grad_fn = jax.value_and_grad(masked_loss_sum, argnums=1, has_aux=True)
    (loss_sum, (correct, new_state)), grads = grad_fn(
        model, params, model_state, x[index], y[index], mask, train=True, key=row_key(key, first_row, stride))
    return loss_sum, correct, grads, new_state


def batch_gradient(model: Model, params, model_state, data, batch: Batch, key, micro_batch: int | None,
                   split: bool = False) -> BatchGradient:
    """Loss sum, correct count and gradient of the loss sum over the batch's real rows.

    Whole batch, micro-batches (a batch larger than ``micro_batch``, accumulated) or, with
    ``split``, two halves of alternate rows side by side (also returning the first half's
    gradient, which the two-batch noise estimate needs): the same result whichever path
    (see the module docstring for what mask, dropout key and model state mean in each).
    ``key`` is the step's raw dropout key, or ``None``.
    """
    size = batch.index.shape[0]
    if split:
        return _halves_gradient(model, params, model_state, data, batch, key)
    if micro_batch is None or micro_batch >= size:
        return BatchGradient(*part_gradient(model, params, model_state, data, batch.index, batch.mask, key, 0, 1))
    return _micro_batch_gradient(model, params, model_state, data, batch, key, micro_batch)


def _halves_gradient(model: Model, params, model_state, data, batch: Batch, key) -> BatchGradient:
    """Two halves of alternate rows (batch rows 0, 2, 4, ... and 1, 3, 5, ...), vmapped.

    A partial last batch (real rows first, padding after) is split evenly too, rather than
    into its real rows and an empty half.
    """
    size = batch.index.shape[0]
    half = -(-size // 2)
    index = jnp.pad(batch.index, (0, 2 * half - size)).reshape(half, 2).T
    mask = jnp.pad(batch.mask, (0, 2 * half - size)).reshape(half, 2).T
    loss, correct, grads, states = jax.vmap(
        lambda i, m, first: part_gradient(model, params, model_state, data, i, m, key, first, 2))(
        index, mask, jnp.arange(2))
    rows = mask.sum(axis=1)
    state_sum = jax.tree.map(lambda s: jnp.tensordot(rows, s.astype(jnp.float32), axes=1), states)
    first = (jax.tree.map(lambda g: g[0], grads), rows[0])
    return BatchGradient(loss.sum(), correct.sum(), jax.tree.map(lambda g: g.sum(0), grads),
                         weighted_state(state_sum, rows.sum(), model_state), first)


def _micro_batch_gradient(model: Model, params, model_state, data, batch: Batch, key, micro_batch: int
                          ) -> BatchGradient:
    """Consecutive micro-batches of ``micro_batch`` rows (the last one padded and masked),
    their sums accumulated in a scan so only one micro-batch is in memory at a time."""
    size = batch.index.shape[0]
    chunks = math.ceil(size / micro_batch)
    pad = chunks * micro_batch - size
    index = jnp.pad(batch.index, (0, pad)).reshape(chunks, micro_batch)
    mask = jnp.pad(batch.mask, (0, pad)).reshape(chunks, micro_batch)

    def accumulate(carry, chunk):
        loss_acc, correct_acc, grad_acc, state_acc = carry
        i, m, c = chunk
        loss_sum, correct, grads, state = part_gradient(model, params, model_state, data, i, m, key,
                                                        c * micro_batch, 1)
        grad_acc = jax.tree.map(jnp.add, grad_acc, grads)
        state_acc = jax.tree.map(jnp.add, state_acc, scale_state(state, m.sum()))
        return (loss_acc + loss_sum, correct_acc + correct, grad_acc, state_acc), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (jnp.zeros(()), jnp.zeros(()), zeros, scale_state(model_state, 0.0))
    (loss_sum, correct, grads, state_sum), _ = jax.lax.scan(
        accumulate, init, (index, mask, jnp.arange(chunks)))
    return BatchGradient(loss_sum, correct, grads, weighted_state(state_sum, mask.sum(), model_state))
