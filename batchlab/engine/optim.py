"""Optimizers through optax, with learning rate and momentum as *traced* values.

``optax.inject_hyperparams`` stores the hyperparameters in the optimizer state, so one
compiled program can vmap over a cohort whose runs differ in learning rate and momentum.
optax's SGD with momentum (``v = m v + g; theta -= lr v``) equals PyTorch's and Keras' at a
constant learning rate.
"""

from __future__ import annotations

import optax

from batchlab.config import OptimizerConfig


def make_optimizer(cfg: OptimizerConfig, lr=None, momentum=None) -> optax.GradientTransformation:
    """The optimizer ``cfg`` names; ``lr``/``momentum`` override its values (they may be traced)."""
    lr = cfg.lr if lr is None else lr
    momentum = cfg.momentum if momentum is None else momentum
    if cfg.name == "sgd":
        return optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))(
            learning_rate=lr, momentum=momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    raise ValueError(f"unknown optimizer {cfg.name!r}")
