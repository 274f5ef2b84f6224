"""Optimizers through optax, with learning rate, momentum and weight decay as *traced* values.

Each run of a cohort carries its own learning rate, momentum and weight decay in its state;
the step builds the optax transformation from them (optax accepts traced scalars), so one
compiled program vmaps over a cohort whose runs differ in them. This compiles about 0.3 s
faster than ``optax.inject_hyperparams`` and computes the same.

The update of one step, in order (PyTorch's order: clipping in the loop, the rest in
``optimizer.step``):
1. ``clip_norm``: the gradient is scaled to global L2 norm ``clip_norm`` when it is larger
   (``optax.clip_by_global_norm``; ``torch.nn.utils.clip_grad_norm_`` adds 1e-6 to the norm).
2. ``weight_decay`` for sgd and adam: L2, ``g + wd theta`` (PyTorch's ``weight_decay``).
3. The optimizer: sgd (``v = m v + g; theta -= lr v``, Nesterov ``theta -= lr (g + m v)``:
   PyTorch's and Keras' at a constant lr), adam, or adamw: Adam's direction plus ``wd theta``,
   decoupled from the gradient, times the lr (optax's ``adamw`` = ``torch.optim.AdamW``).
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from batchlab.config import OptimizerConfig


def make_optimizer(cfg: OptimizerConfig, lr=None, momentum=None, weight_decay=None) -> optax.GradientTransformation:
    """The optimizer ``cfg`` names; ``lr``, ``momentum`` and ``weight_decay`` override its values
    (they may be traced).

    A ``cfg`` without momentum gives SGD without a momentum buffer, whatever ``momentum`` says:
    the runs of one program either all have momentum or none has (``RunConfig.cohort_key``),
    and with a momentum of 0 the buffer only copies the gradient (``v = 0 v + g = g``), so the
    updates are the same, bit for bit, at about half the cost of a small-batch step here. The
    same holds for weight decay. Without clipping or weight decay the transformation is optax's
    plain ``sgd`` or ``adam``.
    """
    lr = cfg.lr if lr is None else lr
    momentum = None if cfg.momentum == 0 else (cfg.momentum if momentum is None else momentum)
    decay = None if cfg.weight_decay == 0 else (cfg.weight_decay if weight_decay is None else weight_decay)
    if cfg.warmup_steps or cfg.schedule != "constant":
        peak = lr
        lr = lambda count: peak * lr_factor(cfg, count)  # noqa: E731
    if cfg.name == "sgd":
        core = optax.sgd(learning_rate=lr, momentum=momentum, nesterov=cfg.nesterov)
    elif cfg.name == "adam":
        core = optax.adam(learning_rate=lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "adamw":
        core = optax.adamw(learning_rate=lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=0.0 if decay is None else decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.name!r}")
    before = []
    if cfg.clip_norm is not None:
        before.append(optax.clip_by_global_norm(cfg.clip_norm))
    if decay is not None and cfg.name != "adamw":
        before.append(optax.add_decayed_weights(decay))
    return optax.chain(*before, core) if before else core


def lr_factor(cfg: OptimizerConfig, count):
    """The schedule's multiplier of the base learning rate at update ``count`` (0-based):
    linear warmup ``min(1, (count + 1) / warmup_steps)`` times the decay (step, cosine or
    linear)."""
    count = jnp.asarray(count, jnp.float32)
    factor = jnp.ones(())
    if cfg.warmup_steps:
        factor = jnp.minimum(1.0, (count + 1) / cfg.warmup_steps)
    if cfg.schedule == "step":
        drops = sum((count >= boundary) for boundary in cfg.schedule_steps)
        factor = factor * cfg.decay ** drops
    elif cfg.schedule in ("cosine", "linear"):
        progress = jnp.minimum(count / cfg.schedule_steps[0], 1.0)
        if cfg.schedule == "cosine":
            factor = factor * (cfg.decay + (1.0 - cfg.decay) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
        else:
            factor = factor * (cfg.decay + (1.0 - cfg.decay) * (1.0 - progress))
    return factor
