"""The training step: the one place where a batch becomes a parameter update.

Read top to bottom: the batch's loss and gradient (masked; whole, as micro-batches or as two
halves: ``engine/gradients.py``) -> optimizer update (``engine/optim.py``) -> the instruments'
measurements (``instruments/``) -> the new state, marked diverged at the first non-finite
loss (the epoch then keeps the run's last finite state, ``engine/epoch.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from batchlab.config import OptimizerConfig
from batchlab.engine.gradients import Batch, batch_gradient
from batchlab.engine.optim import make_optimizer
from batchlab.instruments.base import Step, StepInstrument, measure
from batchlab.instruments.base import start_measures as base_start_measures
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
    dropout_key: jax.Array  # raw threefry key (uint32[2]); each step gives the model row-wise keys of it
    weight_decay: Any = None  # per run, when the cohort's optimizer decays weights
    measures: Any = None  # each instrument's state, by name


def train_step(run: RunState, batch: Batch, count, *, model: Model, optimizer: OptimizerConfig, data,
               reduction: str, micro_batch: int | None, instruments: tuple[StepInstrument, ...] = (),
               devices: int = 1):
    """One optimizer update of one run (update number ``count``, 1-based, the same for every
    run of the cohort). Returns the new state and the step's outputs.

    A non-finite batch loss only marks the run as diverged here; the epoch then keeps the
    run's last finite state (see ``run_epoch``), which keeps this hot path short.
    """
    key = jax.random.fold_in(run.dropout_key, run.step)
    halves = any(ins.halves for ins in instruments)
    batch_grad = batch_gradient(model, run.params, run.model_state, data, batch, key, micro_batch, split=halves,
                                devices=devices)
    rows = jnp.sum(batch.mask)
    mean_grad = jax.tree.map(lambda g: g / rows, batch_grad.grad_sum)
    grads = batch_grad.grad_sum if reduction == "sum" else mean_grad

    transform = make_optimizer(optimizer, run.lr, run.momentum, run.weight_decay)
    updates, new_opt_state = transform.update(grads, run.opt_state, run.params)
    new_params = optax.apply_updates(run.params, updates)

    mb_loss = batch_grad.loss_sum / rows  # reported per example whatever the reduction, so runs compare
    outputs = {"mb_loss": mb_loss, "mb_score": batch_grad.correct / rows}
    measures = run.measures
    if instruments:
        small, small_sq = _small_batch(batch_grad) if halves else (None, None)
        pair = None if small is None else (small, (mean_grad, rows))
        measures, measured = measure(instruments, run.measures,
                                     Step(grads, run.params, new_params, OPS, pair, small_sq), count)
        outputs.update(measured)

    step = run.step + 1
    first_bad = (run.diverged_step < 0) & ~jnp.isfinite(mb_loss)
    new_run = run._replace(params=new_params, model_state=batch_grad.model_state, opt_state=new_opt_state,
                           step=step, diverged_step=jnp.where(first_bad, step, run.diverged_step),
                           measures=measures)
    return new_run, outputs


def _small_batch(batch_grad) -> tuple:
    """The two-batch estimate's small batch, (mean gradient, rows), and the mean squared norm
    where the batch was split over devices (their parts are the small batches; no gradient)."""
    if batch_grad.parts is not None:
        small_sq, part_rows = batch_grad.parts
        return (None, part_rows), small_sq
    half_sum, half_rows = batch_grad.first_half
    return (jax.tree.map(lambda g: g / half_rows, half_sum), half_rows), None


def squared_norms(trees: list) -> jax.Array:
    """||t||^2 of each tree in ``trees`` (same structure), as one vector: the trees are the
    rows of one matrix, written in one fused pass and reduced together (a reduction per
    vector costs several kernels on a CPU, see ``engine/flat.py``)."""
    rows = jnp.stack([jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)]) for tree in trees])
    return jnp.sum(rows * rows, axis=-1)


class JaxOps:
    """The array operations instruments use (``instruments.base.Ops``), in JAX: per run, inside
    the compiled, vmapped step."""

    nan = jnp.nan
    sq_norms = staticmethod(squared_norms)
    sub = staticmethod(optax.tree.sub)
    sqrt = staticmethod(jnp.sqrt)
    where = staticmethod(jnp.where)
    maximum = staticmethod(jnp.maximum)
    stack = staticmethod(jnp.stack)
    concatenate = staticmethod(jnp.concatenate)
    zeros = staticmethod(jnp.zeros)

    @staticmethod
    def asarray(value, like):
        return jnp.asarray(value, like.dtype)

    @staticmethod
    def every(k: int, count, update, state, outputs=()):
        """``update(state)`` at updates that are multiples of ``k``, else ``state`` and NaN
        values: a real branch, since ``count`` is the cohort's (not vmapped)."""
        skipped = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), jax.eval_shape(update, state)[1])
        return jax.lax.cond(count % k == 0, update, lambda state: (state, skipped), state)


OPS = JaxOps()


def start_measures(instruments: tuple[StepInstrument, ...], params) -> dict:
    """Each instrument's initial state, by name (JAX arrays are immutable: theta_0 needs no copy)."""
    return base_start_measures(instruments, params, OPS)
