"""optax's SGD (momentum, Nesterov), Adam and AdamW for the torch backend, in torch's in-place
``_foreach`` ops, so a PyTorch model follows the update rule the JAX engine applies.

Same formulas and order as optax (``engine/optim.py``):
- Clipping: with ||g|| the gradient's global L2 norm (per run), g <- g clip / ||g|| where
  ||g|| >= clip (``optax.clip_by_global_norm``: no epsilon, unlike ``clip_grad_norm_``).
- Weight decay for sgd and adam: g <- g + wd theta (L2, PyTorch's ``weight_decay``).
- SGD: t <- m t + g; direction = t (Nesterov: g + m t); theta <- theta - lr direction.
  At a constant lr this is PyTorch's SGD with dampening 0.
- Adam: mu <- b1 mu + (1-b1) g; nu <- b2 nu + (1-b2) g^2; with k updates done (this one
  included) mu^ = mu / (1 - b1^k), nu^ = nu / (1 - b2^k); direction = mu^ / (sqrt(nu^) + eps),
  eps outside the root as in optax (``OptimizerConfig.eps``, default 1e-7 as in Keras).
- AdamW: Adam's direction + wd theta (decoupled: ``torch.optim.AdamW``).
- The learning rate at update ``count`` (0-based) is lr x ``lr_factor(cfg, count)`` (warmup
  and step/cosine/linear decay), the factors computed once by the JAX engine's own function.

Hyperparameters that differ between the runs of a cohort (lr, momentum, weight decay) are
floats for one run, or tensors of shape (R,) for R stacked runs (parameters with a leading run
axis).
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
        if cfg.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"unknown optimizer {cfg.name!r}")
        self.cfg = cfg
        self.factors = lr_factors(cfg, total_updates)

    def init(self, params: list[torch.Tensor], momentum: Hyper) -> list[list[torch.Tensor]]:
        """Zero moments: Adam's mu and nu; SGD's trace unless momentum is 0 without Nesterov
        (then the trace equals the gradient and is not kept)."""
        zeros = lambda: [torch.zeros_like(p) for p in params]  # noqa: E731
        if self.cfg.name in ("adam", "adamw"):
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
             hyper: "RunHyper", count: int, want_delta: bool = False) -> list[torch.Tensor] | None:
        """Update ``params`` in place (update number ``count``, 0-based); returns the update
        theta_new - theta when ``want_delta`` (for ``update_norm``). ``params`` are aliases that
        do not require grad (``detach()``), so no ``no_grad`` context is paid per step."""
        cfg = self.cfg
        if cfg.clip_norm is not None:
            grads = clip_by_global_norm(grads, cfg.clip_norm, hyper.runs)
        decay = None if cfg.weight_decay == 0 else hyper.weight_decay
        if decay is not None and cfg.name != "adamw":
            grads = torch._foreach_add(grads, torch._foreach_mul(params, _per_leaf(decay, params)))
        if cfg.name in ("adam", "adamw"):
            direction = self._adam(grads, state, count)
            if decay is not None and cfg.name == "adamw":
                torch._foreach_add_(direction, torch._foreach_mul(params, _per_leaf(decay, params)))
        elif state:
            (trace,) = state
            torch._foreach_mul_(trace, _per_leaf(hyper.momentum, trace))
            torch._foreach_add_(trace, grads)
            direction = trace
            if cfg.nesterov:
                direction = torch._foreach_mul(trace, _per_leaf(hyper.momentum, trace))
                torch._foreach_add_(direction, grads)
        else:
            direction = list(grads)
        rate = self.lr_at(hyper.lr, count)
        if not want_delta and not isinstance(rate, torch.Tensor):
            torch._foreach_add_(params, direction, alpha=-rate)
            return None
        delta = torch._foreach_mul(direction, _per_leaf(-rate, params))
        torch._foreach_add_(params, delta)
        return delta

    def _adam(self, grads: list[torch.Tensor], state: list[list[torch.Tensor]], count: int) -> list[torch.Tensor]:
        cfg = self.cfg
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
        return direction


class RunHyper:
    """The hyperparameters that differ between the runs of a group: floats for one run
    (``runs`` = 1, leaves without a run axis), (R,) tensors for R stacked runs."""

    def __init__(self, lr: Hyper, momentum: Hyper, weight_decay: Hyper, runs: int):
        self.lr, self.momentum, self.weight_decay, self.runs = lr, momentum, weight_decay, runs


def clip_by_global_norm(grads: list[torch.Tensor], limit: float, runs: int) -> list[torch.Tensor]:
    """Each run's gradient scaled to global L2 norm ``limit`` where it is larger (optax's
    ``clip_by_global_norm``: ``g / ||g|| * limit``)."""
    norm = torch.sqrt(sum(g.reshape(runs, -1).square().sum(1) for g in grads))  # (runs,)
    keep = norm < limit
    out = []
    for g in grads:
        shape = (-1,) + (1,) * (g.dim() - 1) if g.shape[:1] == (runs,) and runs > 1 else ()
        n, k = (norm.view(shape), keep.view(shape)) if shape else (norm[0], keep[0])
        out.append(torch.where(k, g, g / n * limit))
    return out
