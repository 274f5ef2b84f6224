"""Sharpness at a checkpoint: the largest Hessian eigenvalue and the Hessian trace.

- ``lambda_max``: power iteration on Hessian-vector products (forward-over-reverse,
  ``jvp(grad)``), never forming the Hessian. It converges to the eigenvalue of largest
  magnitude, which near a minimum is the largest (positive) one.
- ``trace``: Hutchinson's estimator E[v^T H v] with Rademacher (+-1) vectors v, returned
  with its standard error.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def flat_loss(loss: Callable, params) -> tuple[Callable, jax.Array]:
    """``loss(params)`` as a function of one flat parameter vector."""
    flat, unravel = ravel_pytree(params)
    return (lambda theta: loss(unravel(theta))), flat


def hvp_fn(loss: Callable) -> Callable:
    grad = jax.grad(loss)
    return jax.jit(lambda theta, v: jax.jvp(grad, (theta,), (v,))[1])


def lambda_max(loss: Callable, params, *, iterations: int = 500, tol: float = 1e-7, seed: int = 0) -> float:
    """Largest-magnitude Hessian eigenvalue by power iteration (stops when it changes < tol, relative)."""
    f, theta = flat_loss(loss, params)
    hvp = hvp_fn(f)
    v = jax.random.normal(jax.random.PRNGKey(seed), theta.shape)
    v = v / jnp.linalg.norm(v)
    value = 0.0
    for _ in range(iterations):
        hv = hvp(theta, v)
        new_value = float(v @ hv)
        v = hv / jnp.linalg.norm(hv)
        if abs(new_value - value) <= tol * abs(new_value):
            return new_value
        value = new_value
    return value


def hutchinson_trace(loss: Callable, params, *, samples: int = 100, seed: int = 0) -> tuple[float, float]:
    """(estimate, standard error) of tr(H) from ``samples`` Rademacher probes."""
    f, theta = flat_loss(loss, params)
    hvp = hvp_fn(f)
    probes = jax.random.rademacher(jax.random.PRNGKey(seed), (samples, theta.shape[0]), dtype=theta.dtype)
    values = np.asarray(jax.vmap(lambda v: v @ hvp(theta, v))(probes), np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(samples))
