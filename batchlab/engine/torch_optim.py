"""optax's SGD (momentum, Nesterov) and Adam for the torch backend, in torch's in-place
``_foreach`` ops, so a PyTorch model follows the update rule the JAX engine applies.

Same formulas and order as optax (``engine/optim.py``):
- SGD: t <- m t + g; direction = t (Nesterov: g + m t); theta <- theta - lr direction.
  At a constant lr this is PyTorch's SGD with dampening 0.
- Adam: mu <- b1 mu + (1-b1) g; nu <- b2 nu + (1-b2) g^2; with k updates done (this one
  included) mu^ = mu / (1 - b1^k), nu^ = nu / (1 - b2^k); direction = mu^ / (sqrt(nu^) + eps),
  eps outside the root as in optax (``OptimizerConfig.eps``, default 1e-7 as in Keras).
- The learning rate at update ``count`` (0-based) is lr x ``lr_factor(cfg, count)`` (warmup
  and step/cosine decay), the factors computed once by the JAX engine's own function.

Hyperparameters that differ between the runs of a cohort (lr, momentum) are floats for one
run, or tensors of shape (R,) for R stacked runs (parameters with a leading run axis).
"""

from __future__ import annotations

import numpy as np
import torch

from batchlab.config import OptimizerConfig

Hyper = float | torch.Tensor  # one run: a float; stacked runs: shape (R,)


def lr_factors(cfg: OptimizerConfig, updates: int) -> np.ndarray | None:
    """float32 multipliers of the base lr for updates 0..updates-1, or None for a constant lr."""
    if not cfg.warmup_steps and cfg.schedule == "constant":
        return None
    from batchlab.engine.optim import lr_factor

    return np.asarray(lr_factor(cfg, np.arange(max(updates, 1))), np.float32)


def _per_leaf(value: Hyper, like: list[torch.Tensor]) -> Hyper | list[torch.Tensor]:
    """A float as is; a per-run tensor (R,) as views (R, 1, ..., 1) that broadcast against each leaf."""
    if isinstance(value, torch.Tensor):
        return [value.view(-1, *([1] * (t.dim() - 1))) for t in like]
    return value


class TorchOptimizer:
    """The update rule of one :class:`OptimizerConfig`; state is a list of tensor lists."""

    def __init__(self, cfg: OptimizerConfig, total_updates: int):
        if cfg.name not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {cfg.name!r}")
        self.cfg = cfg
        self.factors = lr_factors(cfg, total_updates)

    def init(self, params: list[torch.Tensor], momentum: Hyper) -> list[list[torch.Tensor]]:
        """Zero moments: Adam's mu and nu; SGD's trace unless momentum is 0 without Nesterov
        (then the trace equals the gradient and is not kept)."""
        zeros = lambda: [torch.zeros_like(p) for p in params]  # noqa: E731
        if self.cfg.name == "adam":
            return [zeros(), zeros()]
        plain = not self.cfg.nesterov and not isinstance(momentum, torch.Tensor) and momentum == 0.0
        return [] if plain else [zeros()]

    def lr_at(self, lr: Hyper, count: int) -> Hyper:
        """The learning rate of update ``count`` (0-based), in float32 as the JAX engine computes it."""
        if self.factors is None:
            return lr
        factor = self.factors[min(count, len(self.factors) - 1)]
        if isinstance(lr, torch.Tensor):
            return lr * float(factor)
        return float(np.float32(lr) * factor)

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor], state: list[list[torch.Tensor]],
             lr: Hyper, momentum: Hyper, count: int, want_delta: bool = False) -> list[torch.Tensor] | None:
        """Update ``params`` in place (update number ``count``, 0-based); returns the update
        theta_new - theta when ``want_delta`` (for ``update_norm``). ``params`` are aliases that
        do not require grad (``detach()``), so no ``no_grad`` context is paid per step."""
        cfg = self.cfg
        if cfg.name == "adam":
            mu, nu = state
            torch._foreach_mul_(mu, cfg.b1)
            torch._foreach_add_(mu, grads, alpha=1.0 - cfg.b1)
            torch._foreach_mul_(nu, cfg.b2)
            torch._foreach_addcmul_(nu, grads, grads, value=1.0 - cfg.b2)
            k = count + 1
            denom = torch._foreach_div(nu, float(1.0 - np.float32(cfg.b2) ** np.float32(k)))
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, cfg.eps)
            direction = torch._foreach_div(mu, float(1.0 - np.float32(cfg.b1) ** np.float32(k)))
            torch._foreach_div_(direction, denom)
        elif state:
            (trace,) = state
            torch._foreach_mul_(trace, _per_leaf(momentum, trace))
            torch._foreach_add_(trace, grads)
            direction = trace
            if cfg.nesterov:
                direction = torch._foreach_mul(trace, _per_leaf(momentum, trace))
                torch._foreach_add_(direction, grads)
        else:
            direction = list(grads)
        rate = self.lr_at(lr, count)
        if not want_delta and not isinstance(rate, torch.Tensor):
            torch._foreach_add_(params, direction, alpha=-rate)
            return None
        delta = torch._foreach_mul(direction, _per_leaf(-rate, params))
        torch._foreach_add_(params, delta)
        return delta
