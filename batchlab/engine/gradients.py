"""A batch's loss and gradient, computed whole, as micro-batches, as two halves or over devices.

A batch's gradient is computed in one of four ways: the whole batch in one pass, a
sequence of micro-batches of consecutive rows (``--micro-batch``, gradient accumulation),
two halves of alternate rows side by side (for instruments that need the two-batch
estimate, ``instruments/step/noise_scale.py``), or B / D consecutive rows on each of D
devices (``--devices``, data parallel: JAX's ``shard_map`` over a one-axis mesh, each
device's part whole or as micro-batches, the sums added by one all-reduce). All are *the
same computation*, split differently, and give the same loss sum, correct count, gradient
sum and new model state (up to float rounding), because:

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
import numpy as np
from jax.sharding import Mesh, PartitionSpec

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
    first_half: Any = None  # (gradient sum, rows) of the batch's first half, when split in halves
    # Split over devices: (mean over the devices holding rows of |their mean gradient|^2, the
    # effective rows of one part: devices / sum of 1 / rows), for the two-batch estimate.
    parts: Any = None


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
                   split: bool = False, devices: int = 1) -> BatchGradient:
    """Loss sum, correct count and gradient of the loss sum over the batch's real rows.

    Whole batch, micro-batches (a batch larger than ``micro_batch``, accumulated) or, with
    ``split``, two halves of alternate rows side by side (also returning the first half's
    gradient, which the two-batch noise estimate needs): the same result whichever path
    (see the module docstring for what mask, dropout key and model state mean in each).
    ``key`` is the step's raw dropout key, or ``None``. Over ``devices`` > 1, ``split`` asks
    for the devices' parts as the two-batch estimate's small batches instead of two halves.
    """
    if devices > 1:
        return _device_gradient(model, params, model_state, data, batch, key, micro_batch, devices, split)
    if split:
        return _halves_gradient(model, params, model_state, data, batch, key)
    return _consecutive_gradient(model, params, model_state, data, batch, key, micro_batch)


def _consecutive_gradient(model: Model, params, model_state, data, batch: Batch, key, micro_batch: int | None,
                          offset=0) -> BatchGradient:
    """The batch (rows ``offset``, ``offset + 1``, ... of the step's batch) whole, or as
    micro-batches when it is larger than ``micro_batch``."""
    if micro_batch is None or micro_batch >= batch.index.shape[0]:
        return BatchGradient(*part_gradient(model, params, model_state, data, batch.index, batch.mask, key, offset, 1))
    return _micro_batch_gradient(model, params, model_state, data, batch, key, micro_batch, offset)


AXIS = "devices"  # the mesh axis a batch is split along
_meshes: dict[int, Mesh] = {}


def device_mesh(devices: int) -> Mesh:
    """A one-axis mesh over the first ``devices`` devices JAX sees (built once per count)."""
    if devices not in _meshes:
        _meshes[devices] = Mesh(np.array(jax.devices()[:devices]), (AXIS,))
    return _meshes[devices]


def _device_gradient(model: Model, params, model_state, data, batch: Batch, key, micro_batch: int | None,
                     devices: int, split: bool) -> BatchGradient:
    """Rows ``d B/D .. (d+1) B/D - 1`` on device d (each with the whole batch's dropout masks
    for its rows), summed over devices by one all-reduce; parameters, state and data are
    replicated. With ``split``, each device also squares its part's mean gradient, and a
    second (scalar) all-reduce gives the mean square over the devices holding real rows
    (McCandlish et al. 2018, appendix A: the per-device batch is the small batch)."""
    per = batch.index.shape[0] // devices

    def local(params, model_state, data, index, mask):
        offset = jax.lax.axis_index(AXIS) * per
        part = _consecutive_gradient(model, params, model_state, data, Batch(index[0], mask[0]), key, micro_batch,
                                     offset)
        rows = jnp.sum(mask)
        totals = jax.lax.psum((part.loss_sum, part.correct, part.grad_sum, scale_state(part.model_state, rows), rows),
                              AXIS)
        loss_sum, correct, grad_sum, state_sum, all_rows = totals
        gradient = BatchGradient(loss_sum, correct, grad_sum, weighted_state(state_sum, all_rows, model_state))
        if not split:
            return gradient
        held = (rows > 0).astype(jnp.float32)
        square = sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(part.grad_sum)) / jnp.maximum(rows, 1.0) ** 2
        square_sum, inverse_rows, holding = jax.lax.psum((held * square, held / jnp.maximum(rows, 1.0), held), AXIS)
        return gradient._replace(parts=(square_sum / holding, holding / inverse_rows))

    # check_vma=False: without JAX's tracking of what varies between devices, the gradient inside
    # is each device's own (with it, JAX would sum it over devices, as the transpose of
    # replicating the parameters) and the micro-batch loop's carry needs no casts; the one sum
    # over devices is the psum above, and every result is summed, so it is the same everywhere.
    spec = PartitionSpec(AXIS)
    split_over = jax.shard_map(local, mesh=device_mesh(devices), in_specs=(PartitionSpec(), PartitionSpec(),
                                                                            PartitionSpec(), spec, spec),
                               out_specs=PartitionSpec(), check_vma=False)
    return split_over(params, model_state, data, batch.index.reshape(devices, per), batch.mask.reshape(devices, per))


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


def _micro_batch_gradient(model: Model, params, model_state, data, batch: Batch, key, micro_batch: int,
                          offset=0) -> BatchGradient:
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
                                                        offset + c * micro_batch, 1)
        grad_acc = jax.tree.map(jnp.add, grad_acc, grads)
        state_acc = jax.tree.map(jnp.add, state_acc, scale_state(state, m.sum()))
        return (loss_acc + loss_sum, correct_acc + correct, grad_acc, state_acc), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (jnp.zeros(()), jnp.zeros(()), zeros, scale_state(model_state, 0.0))
    (loss_sum, correct, grads, state_sum), _ = jax.lax.scan(
        accumulate, init, (index, mask, jnp.arange(chunks)))
    return BatchGradient(loss_sum, correct, grads, weighted_state(state_sum, mask.sum(), model_state))
