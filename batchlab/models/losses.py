"""One loss per task, and the names of what the engine records for it.

- ``classification``: integer labels, softmax cross-entropy; the score of a row is 1 when
  its arg-max output is its label (accuracy).
- ``regression``: float targets of shape (n,) or (n, k); a row's loss is its mean squared
  error over the k outputs (Keras' ``mse``; PyTorch's ``MSELoss`` when k = 1), and its score
  is that same squared error. Scores are turned into R^2 = 1 - MSE / Var(y) on the host
  (:func:`score_metric`), with Var(y) the variance of the split's targets (pooled over the
  outputs), so an R^2 of 0 is predicting the mean and 1 is exact.

Metric names follow the task: ``train_acc``/``test_acc``/``mb_acc`` for classification,
``train_r2``/``test_r2``/``mb_r2`` for regression; the losses (``train_loss``, ``test_loss``,
``mb_loss``) are the cross-entropy or the MSE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def row_losses(task: str, outputs: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-row loss and score of a batch of model outputs against its labels or targets."""
    if task == "regression":
        predictions = outputs[:, 0] if y.ndim == 1 else outputs
        errors = jnp.square(predictions - y)
        errors = errors if errors.ndim == 1 else errors.mean(axis=-1)
        return errors, errors
    losses = optax.softmax_cross_entropy_with_integer_labels(outputs, y)
    return losses, (jnp.argmax(outputs, axis=-1) == y).astype(jnp.float32)


def score_metric(task: str, score: np.ndarray, target_variance: float) -> np.ndarray:
    """A mean score as recorded: accuracy as it is, a mean squared error as R^2."""
    if task != "regression":
        return score
    return 1.0 - score / target_variance if target_variance > 0 else np.full_like(score, np.nan)


def target_variance(y: np.ndarray) -> float:
    """Variance of regression targets, pooled over outputs (the denominator of R^2)."""
    y = np.asarray(y, np.float64)
    return float(np.mean(np.square(y - y.mean(axis=0)))) if len(y) else float("nan")


def masked_loss_sum(model, params, model_state, x, y, mask, *, train: bool, key):
    """Sum of per-example losses (the model's task) over the real rows (``mask``);
    aux = (sum of per-example scores: correct count or squared errors, new model state)."""
    masked = {"mask": mask} if getattr(model, "uses_mask", False) else {}  # a torch model has no such field
    outputs, new_state = model.apply(params, model_state, x, train=train, key=key, **masked)
    losses, scores = row_losses(model.task, outputs, y)
    return jnp.sum(losses * mask), (jnp.sum(scores * mask), new_state)
