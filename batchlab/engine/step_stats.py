"""Per-step quantities, computed inside the compiled step from what the step already has.

(``batchlab.instruments`` declares them as instruments with schedules and presets.)

- ``grad_norm``: ||g||_2 of the gradient used for the update (all parameters flattened).
- ``update_norm``: ||theta_{t+1} - theta_t||_2.
- ``dist_init``: ||theta_{t+1} - theta_0||_2 (Shen; Hoffer et al.).
- ``weight_norm``: ||theta_{t+1}||_2.
- ``noise_grad_sq``, ``noise_trace``, ``noise_scale``: the online two-batch estimate of the
  simple noise scale (McCandlish et al. 2018). The batch's gradient is computed as two
  halves (alternate rows) side by side; with B_s = |first half|, B_b = |batch| and mean
  gradients g_s, g_b:
  |G|^2 ~ (B_b |g_b|^2 - B_s |g_s|^2) / (B_b - B_s) and
  tr(Sigma) ~ (|g_s|^2 - |g_b|^2) / (1/B_s - 1/B_b). Each is averaged by its own
  exponential moving average (decay ``NOISE_EMA``, bias-corrected) *before* dividing:
  B_simple = EMA[tr(Sigma)] / EMA[|G|^2] (a ratio of noisy estimates is biased).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

NOISE_EMA = 0.99

NORMS = ("grad_norm", "update_norm", "dist_init", "weight_norm")
NOISE = ("noise_grad_sq", "noise_trace", "noise_scale")
PER_STEP = NORMS + NOISE


def output_names(instruments: tuple[str, ...]) -> tuple[str, ...]:
    """The step's scalar outputs, in the order the compiled epoch packs them."""
    names = ("mb_loss", "mb_acc") + tuple(n for n in NORMS if n in instruments)
    return names + (NOISE if uses_noise(instruments) else ())


def uses_noise(names: tuple[str, ...]) -> bool:
    return any(n in NOISE for n in names)


def squared_norms(trees: list) -> jax.Array:
    """||t||^2 of each tree in ``trees`` (same structure), as one vector: the trees are the
    rows of one matrix, written in one fused pass and reduced together (a reduction per
    vector costs several kernels on a CPU, see ``engine/flat.py``)."""
    rows = jnp.stack([jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)]) for tree in trees])
    return jnp.sum(rows * rows, axis=-1)


def two_batch_estimates(g_small, n_small, g_big, n_big):
    """Unbiased |G|^2 and tr(Sigma) from mean gradients of a small and a big batch."""
    small_sq, big_sq = squared_norms([g_small, g_big])
    grad_sq = (n_big * big_sq - n_small * small_sq) / (n_big - n_small)
    trace = (small_sq - big_sq) / (1.0 / n_small - 1.0 / n_big)
    return grad_sq, trace


def measure(names: tuple[str, ...], *, grad_sum, grad_scale, params, new_params, init_params, noise_ema, half
            ) -> tuple[dict, object]:
    """The requested per-step quantities, and the updated noise EMA state (or ``None``).

    The gradient used for the update is ``grad_scale * grad_sum``; the norms read the buffers
    the step has anyway (the summed gradient, old and new parameters) rather than the scaled
    gradient or optax's update, which XLA would otherwise write out as extra arrays.
    """
    wanted = [n for n in NORMS if n in names]
    sources = {"grad_norm": lambda: grad_sum, "update_norm": lambda: optax.tree.sub(new_params, params),
               "dist_init": lambda: optax.tree.sub(new_params, init_params), "weight_norm": lambda: new_params}
    out = {}
    if wanted:
        norms = jnp.sqrt(squared_norms([sources[n]() for n in wanted]))
        out = {n: norms[i] for i, n in enumerate(wanted)}
        if "grad_norm" in out:
            out["grad_norm"] = out["grad_norm"] * grad_scale
    if not uses_noise(names):
        return out, noise_ema
    (g_small, n_small), (g_big, n_big) = half
    grad_sq, trace = two_batch_estimates(g_small, n_small, g_big, n_big)
    valid = n_big > n_small  # a batch of one row cannot be split
    ema = jnp.where(valid, NOISE_EMA * noise_ema[:2] + (1 - NOISE_EMA) * jnp.stack([grad_sq, trace]), noise_ema[:2])
    updates = noise_ema[2] + valid.astype(jnp.float32)
    correction = 1.0 - NOISE_EMA ** jnp.maximum(updates, 1.0)
    noise_ema = jnp.concatenate([ema, updates[None]])
    out["noise_grad_sq"] = ema[0] / correction
    out["noise_trace"] = ema[1] / correction
    out["noise_scale"] = ema[1] / ema[0]
    return out, noise_ema
