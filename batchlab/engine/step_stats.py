"""Per-step quantities, computed inside the compiled step from what the step already has.

(``batchlab.instruments`` declares them as instruments with schedules and presets.)

- ``grad_norm``: ||g||_2 of the gradient used for the update (all parameters flattened).
- ``update_norm``: ||theta_{t+1} - theta_t||_2.
- ``dist_init``: ||theta_{t+1} - theta_0||_2 (Shen; Hoffer et al.).
- ``weight_norm``: ||theta_{t+1}||_2.
- ``noise_grad_sq``, ``noise_trace``, ``noise_scale``: the online two-batch estimate of the
  simple noise scale (McCandlish et al. 2018). The batch's gradient is computed as two
  halves (alternate rows) side by side, with the whole batch's dropout masks, so the update
  is the one the whole batch gives (``engine/step.py``); with B_s = |first half| (real
  rows), B_b = |batch| and mean
  gradients g_s, g_b:
  |G|^2 ~ (B_b |g_b|^2 - B_s |g_s|^2) / (B_b - B_s) and
  tr(Sigma) ~ (|g_s|^2 - |g_b|^2) / (1/B_s - 1/B_b). Each is averaged by its own
  exponential moving average (decay ``NOISE_EMA``, bias-corrected) *before* dividing:
  B_simple = EMA[tr(Sigma)] / EMA[|G|^2] (a ratio of noisy estimates is biased).
- ``noise_grad_sq_se``: the standard error of ``noise_grad_sq``. A third EMA follows the
  square of the |G|^2 estimator x. With n updates, c = 1-d^n, weights w_k = (1-d) d^k
  (k = 0..n-1) and f_n = sum w_k^2 / (sum w_k)^2 = (1-d)/(1+d) * (1+d^n)/(1-d^n):
  v = (EMA[x^2]/c - (EMA[x]/c)^2) / (1 - f_n)  (the weighted variance, made unbiased) and
  se = sqrt(f_n v)  (Var of a weighted mean of independent estimates = f_n Var(x)).
  NaN until two estimates have been made (one estimate says nothing about its spread).
  Consecutive estimates come from different batches, so they are treated as independent;
  drift of the parameters adds to v, which errs towards withholding.
- Withholding rule: ``noise_scale`` is NaN unless EMA[|G|^2] > 2 se, i.e. unless the
  denominator is clearly above zero. When ||G||^2 is small against its estimator's noise
  (late in training, near a minimum) the ratio is otherwise dominated by noise in the
  denominator and spikes by orders of magnitude (one MNIST seed read 17,171 against an
  exact 806). The EMAs themselves are always reported.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

NOISE_EMA = 0.99
NOISE_STATE_SIZE = 4  # EMA[|G|^2 est.], EMA[tr(Sigma) est.], EMA[(|G|^2 est.)^2], number of updates
CLEARLY_POSITIVE = 2.0  # noise_scale is reported only when EMA[|G|^2] > this many standard errors

NORMS = ("grad_norm", "update_norm", "dist_init", "weight_norm")
NOISE = ("noise_grad_sq", "noise_trace", "noise_scale", "noise_grad_sq_se")  # one computation: all or none
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
    noise_ema = update_noise_state(noise_ema, grad_sq, trace, valid=n_big > n_small)  # one row cannot be split
    out.update(noise_outputs(noise_ema))
    return out, noise_ema


def update_noise_state(state, grad_sq, trace, valid=True):
    """One EMA step (decay ``NOISE_EMA``) of [x, tr, x^2] with x the |G|^2 estimate; the last
    entry counts the updates. An invalid step (no split possible) leaves the state as it was."""
    values = jnp.stack([grad_sq, trace, grad_sq * grad_sq])
    ema = jnp.where(valid, NOISE_EMA * state[:3] + (1 - NOISE_EMA) * values, state[:3])
    updates = state[3] + jnp.asarray(valid, state.dtype)
    return jnp.concatenate([ema, updates[None]])


def ema_weight_ratio(updates, decay=NOISE_EMA):
    """f_n = sum_k w_k^2 / (sum_k w_k)^2 for the EMA weights w_k = (1-d) d^k, k = 0..n-1.

    sum w_k^2 = (1-d)^2 (1-d^{2n}) / (1-d^2) and sum w_k = 1-d^n, so
    f_n = (1-d)/(1+d) * (1+d^n)/(1-d^n): 1 at n = 1, (1-d)/(1+d) (= 1/n_eff) as n -> inf.
    Kish's effective sample size of the weighted mean is 1/f_n.
    """
    power = decay ** jnp.maximum(updates, 1.0)
    return (1 - decay) / (1 + decay) * (1 + power) / (1 - power)


def ema_standard_error(mean_ema, square_ema, updates, decay=NOISE_EMA):
    """Standard error of the bias-corrected EMA of iid estimates x, from EMA[x] and EMA[x^2].

    With c = 1-d^n, the bias-corrected EMA is the weighted mean sum_k w_k x_k / c, whose
    variance is f_n Var(x) (``ema_weight_ratio``). Var(x) is estimated by the weighted
    variance EMA[x^2]/c - (EMA[x]/c)^2, whose expectation is (1 - f_n) Var(x) (the weighted
    analogue of the n-1 correction; e.g. GSL's ``gsl_stats_wvariance``), hence divided by
    1 - f_n. NaN for n < 2. In float32 the difference of the two EMAs loses precision when
    se << mean; the withholding decision is then clear anyway.
    """
    correction = 1.0 - decay ** jnp.maximum(updates, 1.0)
    mean = mean_ema / correction
    weighted_var = jnp.maximum(square_ema / correction - mean * mean, 0.0)  # >= 0 up to rounding
    f = ema_weight_ratio(updates, decay)
    var = jnp.where(updates >= 2, weighted_var / jnp.where(updates >= 2, 1 - f, 1.0), jnp.nan)
    return jnp.sqrt(f * var)


def noise_outputs(state) -> dict:
    """``noise_grad_sq``, ``noise_trace``, ``noise_grad_sq_se`` and ``noise_scale`` from the
    EMA state; ``noise_scale`` = EMA[tr] / EMA[|G|^2] only where EMA[|G|^2] > 2 se, else NaN."""
    grad_sq_ema, trace_ema, square_ema, updates = state[0], state[1], state[2], state[3]
    correction = 1.0 - NOISE_EMA ** jnp.maximum(updates, 1.0)
    grad_sq, trace = grad_sq_ema / correction, trace_ema / correction
    se = ema_standard_error(grad_sq_ema, square_ema, updates)
    clear = grad_sq > CLEARLY_POSITIVE * se  # False for NaN se: too few updates to tell
    return {"noise_grad_sq": grad_sq, "noise_trace": trace, "noise_grad_sq_se": se,
            "noise_scale": jnp.where(clear, trace / grad_sq, jnp.nan)}
