"""The training step: the one place where a batch becomes a parameter update.

Read top to bottom: gather the batch -> loss and gradient (masked, optionally accumulated
over micro-batches) -> optimizer update -> keep it only if the run is active and the loss
is finite -> per-step outputs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from batchlab.config import OptimizerConfig
from batchlab.engine.optim import make_optimizer
from batchlab.engine import step_stats
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
    dropout_key: jax.Array
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
    """Sum of per-example cross-entropy over real rows; aux = (correct count, new model state)."""
    logits, new_state = model.apply(params, model_state, x, train=train, key=key)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
    return jnp.sum(losses * mask), (jnp.sum(correct * mask), new_state)


class BatchGradient(NamedTuple):
    loss_sum: jax.Array
    correct: jax.Array
    grad_sum: Any  # gradient of the loss *sum* over the batch's real rows
    model_state: Any
    first_half: Any = None  # (gradient sum, rows) of the batch's first half, when split


def batch_gradient(model: Model, params, model_state, data, batch: Batch, key, micro_batch: int | None,
                   split: bool = False) -> BatchGradient:
    """Loss sum, correct count and gradient of the loss sum over the batch's real rows.

    A batch larger than ``micro_batch`` is split into micro-batches whose gradient sums are
    accumulated: the same gradient as one pass over the whole batch (up to float rounding).
    ``split`` computes the gradients of two halves of the batch side by side (vmapped) and
    also returns the first half's, which the two-batch noise estimate needs.
    """
    x, y = data
    grad_fn = jax.value_and_grad(masked_loss_sum, argnums=1, has_aux=True)
    size = batch.index.shape[0]
    if split:
        # Halves of alternate rows: a partial last batch (real rows first, padding after) is
        # split evenly too, rather than into its real rows and an empty half.
        half = -(-size // 2)
        index = jnp.pad(batch.index, (0, 2 * half - size)).reshape(half, 2).T
        mask = jnp.pad(batch.mask, (0, 2 * half - size)).reshape(half, 2).T
        (loss, (correct, states)), grads = jax.vmap(
            lambda i, m: grad_fn(model, params, model_state, x[i], y[i], m, train=True, key=key))(index, mask)
        first = (jax.tree.map(lambda g: g[0], grads), jnp.sum(mask[0]))
        return BatchGradient(loss.sum(), correct.sum(), jax.tree.map(lambda g: g.sum(0), grads),
                             jax.tree.map(lambda a: a[0], states), first)
    if micro_batch is None or micro_batch >= size:
        (loss_sum, (correct, new_state)), grads = grad_fn(
            model, params, model_state, x[batch.index], y[batch.index], batch.mask, train=True, key=key)
        return BatchGradient(loss_sum, correct, grads, new_state)

    chunks = math.ceil(size / micro_batch)
    pad = chunks * micro_batch - size
    index = jnp.pad(batch.index, (0, pad)).reshape(chunks, micro_batch)
    mask = jnp.pad(batch.mask, (0, pad)).reshape(chunks, micro_batch)

    def accumulate(carry, chunk):
        loss_acc, correct_acc, grad_acc, state = carry
        i, m, c = chunk
        (loss_sum, (correct, state)), grads = grad_fn(
            model, params, state, x[i], y[i], m, train=True, key=jax.random.fold_in(key, c))
        grad_acc = jax.tree.map(jnp.add, grad_acc, grads)
        return (loss_acc + loss_sum, correct_acc + correct, grad_acc, state), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    init = (jnp.zeros(()), jnp.zeros(()), zeros, model_state)
    (loss_sum, correct, grads, new_state), _ = jax.lax.scan(
        accumulate, init, (index, mask, jnp.arange(chunks)))
    return BatchGradient(loss_sum, correct, grads, new_state)


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
