"""``noise_scale``: the online two-batch estimate of ||G||^2, tr(Sigma) and the simple noise
scale B_simple = tr(Sigma) / ||G||^2 (McCandlish et al. 2018, appendix A).

Outputs ``noise_grad_sq``, ``noise_trace``, ``noise_scale`` and ``noise_grad_sq_se`` (one
computation: all or none). The batch's gradient is computed as two halves (alternate rows)
side by side, with the whole batch's dropout masks, so the update is the one the whole
batch gives; with B_s = |first half| (real rows), B_b = |batch| and mean gradients g_s, g_b:

    ||G||^2  ~ (B_b |g_b|^2 - B_s |g_s|^2) / (B_b - B_s)
    tr(Sigma) ~ (|g_s|^2 - |g_b|^2) / (1/B_s - 1/B_b)

Over D devices (``--devices``) the batch is not halved: each device's B / D rows are a small
batch, and the mean of |g_s|^2 over the devices stands for |g_s|^2 (E|g_s|^2 = ||G||^2 +
tr(Sigma) / B_s for each; with unequal real rows in a partial batch, B_s = D / sum 1/B_d keeps
it unbiased).

Each is averaged by its own exponential moving average (decay ``DECAY``, bias-corrected)
*before* dividing: B_simple = EMA[tr(Sigma)] / EMA[|G|^2] (a ratio of noisy estimates is
biased). A batch of one row cannot be split: it leaves the averages as they were.

``noise_grad_sq_se``, the standard error of ``noise_grad_sq``: a third EMA follows the square
of the |G|^2 estimator x. With n updates, c = 1-d^n, weights w_k = (1-d) d^k (k = 0..n-1) and
f_n = sum w_k^2 / (sum w_k)^2 = (1-d)/(1+d) * (1+d^n)/(1-d^n):
v = (EMA[x^2]/c - (EMA[x]/c)^2) / (1 - f_n) (the weighted variance, made unbiased; e.g. GSL's
``gsl_stats_wvariance``) and se = sqrt(f_n v) (the variance of a weighted mean of independent
estimates is f_n Var(x)). NaN until two estimates have been made. Consecutive estimates come
from different batches, so they are treated as independent; drift of the parameters adds to
v, which errs towards withholding.

Withholding rule: ``noise_scale`` is NaN unless EMA[|G|^2] > 2 se, i.e. unless the denominator
is clearly above zero. When ||G||^2 is small against its estimator's noise (late in training,
near a minimum) the ratio is otherwise dominated by noise in the denominator and spikes by
orders of magnitude (one MNIST seed read 17,171 against an exact 806). The EMAs themselves are
always reported.
"""

from __future__ import annotations

from typing import Any

from batchlab.instruments.base import Ops, Step, StepInstrument

DECAY = 0.99
CLEARLY_POSITIVE = 2.0  # noise_scale is reported only when EMA[|G|^2] > this many standard errors
OUTPUTS = ("noise_grad_sq", "noise_trace", "noise_scale", "noise_grad_sq_se")
STATE_SIZE = 4  # EMA[|G|^2 est.], EMA[tr(Sigma) est.], EMA[(|G|^2 est.)^2], number of updates


def two_batch_estimates(small_sq, n_small, big_sq, n_big):
    """Unbiased |G|^2 and tr(Sigma) from the squared norms of a small and a big batch's mean gradients."""
    grad_sq = (n_big * big_sq - n_small * small_sq) / (n_big - n_small)
    trace = (small_sq - big_sq) / (1.0 / n_small - 1.0 / n_big)
    return grad_sq, trace


def init(params: Any, ops: Ops):
    return ops.zeros((STATE_SIZE,))


def update(state, step: Step) -> tuple[Any, dict[str, Any]]:
    ops = step.ops
    (g_small, n_small), (g_big, n_big) = step.halves
    if step.small_sq is None:
        small_sq, big_sq = ops.sq_norms([g_small, g_big])  # one fused pass over both
    else:  # split over devices: the mean over their parts, all-reduced by the engine
        small_sq, big_sq = step.small_sq, ops.sq_norms([g_big])[0]
    grad_sq, trace = two_batch_estimates(small_sq, n_small, big_sq, n_big)
    state = ema_step(state, grad_sq, trace, n_big > n_small, ops)
    return state, outputs(state, ops)


def ema_step(state, grad_sq, trace, valid, ops: Ops):
    """One EMA step (decay ``DECAY``) of [x, tr, x^2] with x the |G|^2 estimate; the last entry
    counts the updates. An invalid step (no split possible) leaves the state as it was."""
    values = ops.stack([grad_sq, trace, grad_sq * grad_sq], axis=-1)
    ema = ops.where(valid, DECAY * state[..., :3] + (1 - DECAY) * values, state[..., :3])
    updates = state[..., 3] + ops.asarray(valid, state)
    return ops.concatenate([ema, updates[..., None]], axis=-1)


def ema_weight_ratio(updates, decay=DECAY):
    """f_n = sum_k w_k^2 / (sum_k w_k)^2 for the EMA weights w_k = (1-d) d^k, k = 0..n-1:
    (1-d)/(1+d) * (1+d^n)/(1-d^n); 1 at n = 1, (1-d)/(1+d) (= 1/n_eff) as n -> inf (Kish's
    effective sample size of the weighted mean is 1/f_n)."""
    power = decay ** updates
    return (1 - decay) / (1 + decay) * (1 + power) / (1 - power)


def ema_standard_error(mean_ema, square_ema, updates, ops: Ops, decay=DECAY):
    """Standard error of the bias-corrected EMA of iid estimates x, from EMA[x] and EMA[x^2]
    (module docstring). NaN for n < 2. In float32 the difference of the two EMAs loses
    precision when se << mean; the withholding decision is then clear anyway."""
    at_least_one = ops.maximum(updates, 1.0)
    correction = 1.0 - decay ** at_least_one
    mean = mean_ema / correction
    weighted_var = ops.maximum(square_ema / correction - mean * mean, 0.0)  # >= 0 up to rounding
    f = ema_weight_ratio(at_least_one, decay)
    var = ops.where(updates >= 2, weighted_var / ops.where(updates >= 2, 1 - f, 1.0), ops.nan)
    return ops.sqrt(f * var)


def outputs(state, ops: Ops) -> dict[str, Any]:
    """``noise_grad_sq``, ``noise_trace``, ``noise_grad_sq_se`` and ``noise_scale`` = EMA[tr] /
    EMA[|G|^2] where EMA[|G|^2] > 2 se (else NaN), from the EMA state."""
    grad_sq_ema, trace_ema, square_ema, updates = (state[..., i] for i in range(STATE_SIZE))
    correction = 1.0 - DECAY ** ops.maximum(updates, 1.0)
    grad_sq, trace = grad_sq_ema / correction, trace_ema / correction
    se = ema_standard_error(grad_sq_ema, square_ema, updates, ops)
    clear = grad_sq > CLEARLY_POSITIVE * se  # False for NaN se: too few updates to tell
    return {"noise_grad_sq": grad_sq, "noise_trace": trace, "noise_grad_sq_se": se,
            "noise_scale": ops.where(clear, trace / grad_sq, ops.nan)}


INSTRUMENT = StepInstrument("noise_scale", __doc__, update, init, outputs=OUTPUTS, halves=True, cost=4)
