"""Sharpness at a checkpoint: the largest Hessian eigenvalue, the Hessian trace and Keskar's
epsilon-sharpness.

- ``lambda_max``: power iteration on Hessian-vector products (forward-over-reverse,
  ``jvp(grad)``), never forming the Hessian. It converges to the eigenvalue of largest
  magnitude, which near a minimum is the largest (positive) one.
- ``trace``: Hutchinson's estimator E[v^T H v] with Rademacher (+-1) vectors v, returned
  with its standard error.
- ``epsilon_sharpness``: the largest relative loss increase in a small box around the
  parameters (Keskar et al. 2017, eq. 4).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from batchlab.models.losses import masked_loss_sum


def flat_loss(loss: Callable, params) -> tuple[Callable, jax.Array]:
    """``loss(params)`` as a function of one flat parameter vector."""
    flat, unravel = ravel_pytree(params)
    return (lambda theta: loss(unravel(theta))), flat


def hvp_fn(loss: Callable) -> Callable:
    grad = jax.grad(loss)
    return jax.jit(lambda theta, v: jax.jvp(grad, (theta,), (v,))[1])


def lambda_max(loss: Callable, params, *, iterations: int = 500, tol: float = 1e-7, seed: int = 0) -> float:
    """Largest-magnitude Hessian eigenvalue of ``loss`` at ``params`` (:func:`power_iteration`)."""
    f, theta = flat_loss(loss, params)
    hvp = hvp_fn(f)
    v0 = np.random.default_rng(seed).normal(size=theta.shape[0]).astype(np.float32)
    return power_iteration(lambda v: hvp(theta, v), v0, iterations=iterations, tol=tol)[0]


def hutchinson_trace(loss: Callable, params, *, samples: int = 100, seed: int = 0) -> tuple[float, float]:
    """(estimate, standard error) of tr(H) from ``samples`` Rademacher probes (:func:`hutchinson_values`)."""
    f, theta = flat_loss(loss, params)
    hvp = hvp_fn(f)
    probes = np.random.default_rng(seed).choice(np.array([-1.0, 1.0], np.float32), size=(samples, theta.shape[0]))
    values = np.asarray(hutchinson_values(lambda v: hvp(theta, v), probes), np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(samples))


def power_iteration(hvp: Callable, v0: np.ndarray, *, iterations: int = 100, tol: float = 1e-4
                    ) -> tuple[float, int]:
    """Largest-magnitude eigenvalue of a symmetric operator ``hvp`` (v -> H v) by power iteration.

    v <- H v / ||H v||; the estimate is the Rayleigh quotient v^T H v, stopped when it changes
    by less than ``tol`` (relative) between iterations. Near a minimum the dominant eigenvalue
    is the largest positive one (the sharpness of Keskar et al. 2017, section 2.2). The
    bookkeeping is NumPy (float64), so only ``hvp`` runs compiled code.
    Returns (eigenvalue, iterations used).
    """
    v = np.asarray(v0, np.float32)
    v = v / np.linalg.norm(v)
    value = float("nan")
    for i in range(1, iterations + 1):
        hv = np.asarray(hvp(v), np.float64)
        new = float(v.astype(np.float64) @ hv)
        size = float(np.linalg.norm(hv))
        if size == 0.0:
            return 0.0, i
        v = (hv / size).astype(np.float32)
        if abs(new - value) <= tol * abs(new):
            return new, i
        value = new
    return value, iterations


def hutchinson_values(hvp: Callable, probes):
    """v^T H v for each row v of ``probes``; with +-1 entries their mean estimates tr(H)
    (Hutchinson 1989): E[v^T H v] = sum_ij H_ij E[v_i v_j] = tr(H)."""
    return jax.vmap(lambda v: v @ hvp(v))(probes)


def epsilon_sharpness(loss: Callable, theta, key, *, eps: float = 1e-3, steps: int = 20, starts: int = 2,
                      step_fraction: float = 0.25):
    """Keskar et al. (2017, eq. 4) epsilon-sharpness of ``loss`` at ``theta``, in percent:

        phi = 100 * (max_{delta in C} f(theta + delta) - f(theta)) / (1 + f(theta)),
        C = {delta : |delta_i| <= eps (|theta_i| + 1) for every i}.

    The maximum is approached from below by projected sign-gradient ascent (steepest ascent for
    a box): ``steps`` times delta <- clip(delta + step_fraction * r * sign(grad f(theta + delta)),
    -r, r) with r = eps (|theta| + 1), from ``starts`` points (the centre, then uniformly random
    points of C), keeping the largest loss seen (theta itself included). The loss is not concave
    in the box, so one ascent can stop at a lower corner; more starts make that less likely.
    Keskar et al. maximise with L-BFGS-B instead; any ascent gives a lower bound of the maximum.
    Returns (phi, f(theta)). Pure JAX: jit it with ``loss`` closed over.
    """
    radius = eps * (jnp.abs(theta) + 1.0)
    base = loss(theta)
    value_and_grad = jax.value_and_grad(lambda d: loss(theta + d))

    def ascend(start):
        def step(_, carry):
            delta, best = carry
            value, grad = value_and_grad(delta)
            delta = jnp.clip(delta + step_fraction * radius * jnp.sign(grad), -radius, radius)
            return delta, jnp.maximum(best, value)

        delta, best = jax.lax.fori_loop(0, steps, step, (start, base))
        return jnp.maximum(best, loss(theta + delta))

    random = jax.random.uniform(key, (starts - 1, *theta.shape), theta.dtype, -1.0, 1.0) * radius
    best = jax.lax.map(ascend, jnp.concatenate([jnp.zeros((1, *theta.shape), theta.dtype), random]))
    return 100.0 * (best.max() - base) / (1.0 + base), base


@functools.lru_cache(maxsize=8)
def sharpness_programs(model, steps: int, starts: int):
    """Compiled sharpness programs of one model (compiled once, reused for every run).

    The loss is the batch-mean cross-entropy of the pool, evaluation mode (no dropout), as a
    function of all parameters flattened into one vector.
    """
    def flat_loss(params, x, y):
        theta, unravel = ravel_pytree(params)

        def loss(t):
            total, _ = masked_loss_sum(model, unravel(t), {}, x, y, jnp.ones(y.shape[0]), train=False, key=None)
            return total / y.shape[0]
        return loss, theta

    def hvp(params, x, y, v):
        loss, theta = flat_loss(params, x, y)
        return jax.jvp(jax.grad(loss), (theta,), (v,))[1]

    def quad_forms(params, x, y, probes):
        return hutchinson_values(lambda v: hvp(params, x, y, v), probes)

    def sharpness(params, x, y, seed, eps):
        loss, theta = flat_loss(params, x, y)
        return epsilon_sharpness(loss, theta, jax.random.PRNGKey(seed), eps=eps, steps=steps, starts=starts)

    return jax.jit(hvp), jax.jit(quad_forms), jax.jit(sharpness)
