"""One epoch as one compiled ``lax.scan`` over its optimizer steps, and the evaluation pass.

Each epoch visits the training set in its own order (per run), lays it out as
``steps x B`` row indices, and scans :func:`train_step` over the rows. When B does not
divide N the last batch is either dropped or padded *and masked*, so its gradient is
exactly that of the smaller real batch.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from batchlab.engine.step import Batch, RunState, masked_loss_sum, select, train_step
from batchlab.models.base import Model

EVAL_CHUNK = 8192  # rows per forward pass when evaluating, so memory stays bounded


def epoch_orders(data_seeds: list[int], epoch: int, n: int, shuffle: str) -> np.ndarray:
    """Order in which each run visits the training rows this epoch, shape (runs, N).

    Drawn on the host with NumPy (``SeedSequence([data_seed, epoch])``): cheap, identical on
    every device, and it keeps the sort-based permutation out of the compiled program,
    which roughly halves its compile time. ``once`` uses epoch 0's order throughout.
    """
    if shuffle == "never":
        return np.broadcast_to(np.arange(n, dtype=np.int32), (len(data_seeds), n))
    draw = epoch if shuffle == "every-epoch" else 0
    return np.stack([np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, draw]))).permutation(n)
                     for seed in data_seeds]).astype(np.int32)


def batch_layout(order: jax.Array, batch_size: int, steps: int) -> Batch:
    """``steps x B`` row indices and mask: disjoint batches covering the (kept) rows once."""
    n = order.shape[0]
    slots = steps * batch_size
    if slots <= n:  # every batch full (B divides N, or the partial batch is dropped)
        return Batch(order[:slots].reshape(steps, batch_size), jnp.ones((steps, batch_size)))
    index = jnp.concatenate([order, jnp.zeros(slots - n, order.dtype)])
    mask = (jnp.arange(slots) < n).astype(jnp.float32)
    return Batch(index.reshape(steps, batch_size), mask.reshape(steps, batch_size))


def evaluate(model: Model, params, model_state, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean loss and accuracy over all of (x, y) in evaluation mode, in bounded chunks."""
    n = x.shape[0]
    if n <= EVAL_CHUNK:
        loss_sum, (correct, _) = masked_loss_sum(model, params, model_state, x, y, jnp.ones(n),
                                                 train=False, key=None)
        return loss_sum / n, correct / n
    chunks = -(-n // EVAL_CHUNK)
    pad = chunks * EVAL_CHUNK - n
    xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(chunks, EVAL_CHUNK, *x.shape[1:])
    ys = jnp.pad(y, (0, pad)).reshape(chunks, EVAL_CHUNK)
    ms = (jnp.arange(chunks * EVAL_CHUNK) < n).astype(jnp.float32).reshape(chunks, EVAL_CHUNK)

    def body(acc, chunk):
        xc, yc, mc = chunk
        loss_sum, (correct, _) = masked_loss_sum(model, params, model_state, xc, yc, mc, train=False, key=None)
        return (acc[0] + loss_sum, acc[1] + correct), None

    (loss_sum, correct), _ = jax.lax.scan(body, (jnp.zeros(()), jnp.zeros(())), (xs, ys, ms))
    return loss_sum / n, correct / n


def evaluate_run(run: RunState, data, *, model: Model) -> dict[str, jax.Array]:
    """Full-pass metrics of one run on the training and test sets (eval mode)."""
    x_train, y_train, x_test, y_test = data
    train_loss, train_acc = evaluate(model, run.params, run.model_state, x_train, y_train)
    test_loss, test_acc = evaluate(model, run.params, run.model_state, x_test, y_test)
    return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc}


def run_epoch(run: RunState, active: jax.Array, order: jax.Array, data, *, model: Model, optimizer,
              batch_size: int, steps: int, reduction: str, micro_batch: int | None):
    """Train one run for one epoch in the given row order, then evaluate it.

    An inactive run (stopped early, or diverged before) and a run that diverges during this
    epoch keep the state they had at its start; the latter records where it diverged.
    Returns (state, per-step outputs, metrics).
    """
    x_train, y_train = data[0], data[1]
    batches = batch_layout(order, batch_size, steps)
    step = partial(train_step, model=model, optimizer=optimizer, data=(x_train, y_train),
                   reduction=reduction, micro_batch=micro_batch)
    trained, per_step = jax.lax.scan(step, run, batches)
    keep = active & (trained.diverged_step < 0)
    run = select(keep, trained, run)._replace(
        diverged_step=jnp.where(active, trained.diverged_step, run.diverged_step))
    return run, per_step, evaluate_run(run, data, model=model)
