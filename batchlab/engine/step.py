"""The training step: the one place where a batch becomes a parameter update.

Read top to bottom: gather the batch -> loss and gradient (masked, optionally accumulated
over micro-batches) -> optimizer update -> keep it only if the run is active and the loss
is finite -> per-step outputs.

Gradient paths, and what mask, model state and dropout key mean in each
-------------------------------------------------------------------------
A batch's gradient is computed in one of three ways: the whole batch in one pass, a
sequence of micro-batches of consecutive rows (``--micro-batch``, gradient accumulation),
or two halves of alternate rows side by side (the two-batch noise instruments). All three
are *the same computation*, split differently, and give the same loss sum, correct count,
gradient sum and new model state (up to float rounding), because:

- **Mask**: ``Batch.mask`` marks the real rows; every path sums per-example losses times
  the mask of the rows it holds, so padded rows (a partial last batch, or the padding that
  makes the rows divide into micro-batches or halves) contribute nothing.
- **Dropout key**: the step's key is ``fold_in(dropout_seed key, step)``; every random draw
  a model makes from it is indexed by *row position in the batch*. The model receives a
  ``rowwise`` key (see ``row_key``) that knows which rows of the batch it is looking at
  (first row, stride); a draw of shape ``(n, ...)`` gives row i of the part the bits that
  row ``first + stride * i`` of the batch gets in a whole-batch draw (threefry counters are
  (batch row, position within the row)). So micro-batches and halves see exactly the
  whole batch's dropout masks. This holds for draws whose leading axis is the batch's rows
  (dropout on activations, as in every built-in model); a draw with no axis (a scalar) is
  shared by all parts; a draw whose leading axis is something else (a weight-shaped mask)
  is not split-invariant. ``fold_in`` and ``split`` of the key keep its rows.
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
import optax
from jax.extend.random import define_prng_impl, threefry2x32_p

from batchlab.config import OptimizerConfig
from batchlab.engine.optim import make_optimizer
from batchlab.engine import step_stats
from batchlab.engine.losses import row_losses
from batchlab.models.base import Model


class RunState(NamedTuple):
    """Everything one run carries from step to step (a cohort stacks these on a leading axis)."""

    params: Any
    model_state: Any
    opt_state: Any
    lr: jax.Array
    momentum: jax.Array  # SGD only
    step: jax.Array  # updates computed so far (also numbers the dropout keys)
    diverged_step: jax.Array  # first update whose batch loss was non-finite; -1 if none
    dropout_key: jax.Array  # raw threefry key (uint32[2]); each step gives the model ``row_key``s of it
    init_params: Any = None  # theta_0, kept only when ``dist_init`` is measured
    noise_ema: Any = None  # EMA state of the two-batch noise estimate, when measured


class Batch(NamedTuple):
    """A batch as row indices into the training set plus a mask of real (not padded) rows."""

    index: jax.Array  # (B,) int32
    mask: jax.Array  # (B,) float32, 1 for real rows


def select(keep: jax.Array, new, old):
    """``new`` where ``keep`` else ``old``, leaf by leaf (``keep`` is a scalar per run)."""
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)


def masked_loss_sum(model: Model, params, model_state, x, y, mask, *, train: bool, key):
    """Sum of per-example losses (the model's task: ``engine/losses.py``) over real rows;
    aux = (sum of per-example scores: correct count or squared errors, new model state)."""
    outputs, new_state = model.apply(params, model_state, x, train=train, key=key)
    losses, scores = row_losses(model.task, outputs, y)
    return jnp.sum(losses * mask), (jnp.sum(scores * mask), new_state)


class BatchGradient(NamedTuple):
    loss_sum: jax.Array
    correct: jax.Array
    grad_sum: Any  # gradient of the loss *sum* over the batch's real rows
    model_state: Any
    first_half: Any = None  # (gradient sum, rows) of the batch's first half, when split


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


def train_step(run: RunState, batch: Batch, *, model: Model, optimizer: OptimizerConfig,
               data, reduction: str, micro_batch: int | None, instruments: tuple[str, ...] = ()):
    """One optimizer update of one run. Returns the new state and the step's outputs.

    A non-finite batch loss only marks the run as diverged here; the epoch then keeps the
    run's last finite state (see ``run_epoch``), which keeps this hot path short.
    """
    key = jax.random.fold_in(run.dropout_key, run.step)
    batch_grad = batch_gradient(model, run.params, run.model_state, data, batch, key, micro_batch,
                                split=step_stats.uses_noise(instruments))
    count = jnp.sum(batch.mask)
    mean_grad = jax.tree.map(lambda g: g / count, batch_grad.grad_sum)
    grads = batch_grad.grad_sum if reduction == "sum" else mean_grad

    updates, new_opt_state = make_optimizer(optimizer, run.lr, run.momentum).update(grads, run.opt_state, run.params)
    new_params = optax.apply_updates(run.params, updates)

    mb_loss = batch_grad.loss_sum / count  # reported per example whatever the reduction, so runs compare
    outputs = {"mb_loss": mb_loss, "mb_acc": batch_grad.correct / count}
    noise_ema = run.noise_ema
    if instruments:
        half = None
        if batch_grad.first_half is not None:
            half_sum, half_count = batch_grad.first_half
            half = ((jax.tree.map(lambda g: g / half_count, half_sum), half_count), (mean_grad, count))
        measured, noise_ema = step_stats.measure(
            instruments, grad_sum=batch_grad.grad_sum, grad_scale=1.0 if reduction == "sum" else 1.0 / count,
            params=run.params, new_params=new_params, init_params=run.init_params, noise_ema=run.noise_ema,
            half=half)
        outputs.update(measured)

    step = run.step + 1
    first_bad = (run.diverged_step < 0) & ~jnp.isfinite(mb_loss)
    new_run = run._replace(params=new_params, model_state=batch_grad.model_state, opt_state=new_opt_state,
                           step=step, diverged_step=jnp.where(first_bad, step, run.diverged_step),
                           noise_ema=noise_ema)
    return new_run, outputs
