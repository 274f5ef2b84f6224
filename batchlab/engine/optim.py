"""Optimizers through optax, with learning rate and momentum as *traced* values.

Each run of a cohort carries its own learning rate and momentum in its state; the step
builds the optax transformation from them (``optax.sgd(lr, momentum)`` accepts traced
scalars), so one compiled program vmaps over a cohort whose runs differ in both. This
compiles about 0.3 s faster than ``optax.inject_hyperparams`` and computes the same.
optax's SGD with momentum (``v = m v + g; theta -= lr v``) equals PyTorch's and Keras' at a
constant learning rate.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from batchlab.config import OptimizerConfig


def make_optimizer(cfg: OptimizerConfig, lr=None, momentum=None) -> optax.GradientTransformation:
    """The optimizer ``cfg`` names; ``lr``/``momentum`` override its values (they may be traced).

    A ``cfg`` without momentum gives SGD without a momentum buffer, whatever ``momentum`` says:
    the runs of one program either all have momentum or none has (``RunConfig.cohort_key``),
    and with a momentum of 0 the buffer only copies the gradient (``v = 0 v + g = g``), so
    the updates are the same, bit for bit, at about half the cost of a small-batch step here.
    """
    lr = cfg.lr if lr is None else lr
    momentum = None if cfg.momentum == 0 else (cfg.momentum if momentum is None else momentum)
    if cfg.warmup_steps or cfg.schedule != "constant":
        peak = lr
        lr = lambda count: peak * lr_factor(cfg, count)  # noqa: E731
    if cfg.name == "sgd":
        return optax.sgd(learning_rate=lr, momentum=momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return optax.adam(learning_rate=lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(cfg: OptimizerConfig, count):
    """The schedule's multiplier of the base learning rate at update ``count`` (0-based):
    linear warmup ``min(1, (count + 1) / warmup_steps)`` times the decay (step or cosine)."""
    count = jnp.asarray(count, jnp.float32)
    factor = jnp.ones(())
    if cfg.warmup_steps:
        factor = jnp.minimum(1.0, (count + 1) / cfg.warmup_steps)
    if cfg.schedule == "step":
        drops = sum((count >= boundary) for boundary in cfg.schedule_steps)
        factor = factor * cfg.decay ** drops
    elif cfg.schedule == "cosine":
        progress = jnp.minimum(count / cfg.schedule_steps[0], 1.0)
        factor = factor * (cfg.decay + (1.0 - cfg.decay) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
    return factor
