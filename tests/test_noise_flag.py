"""The online noise scale's standard error and its withholding rule (``instruments/step/noise_scale.py``).

Standard error: simulated streams of iid estimates through the engine's own EMA recursion,
against the spread of the EMA over streams computed independently with NumPy. Withholding:
per-sample gradients of a small logistic regression at its optimum (||G|| ~ 0) and at its
zero initialisation (||G|| clearly > 0), fed through the instrument's ``update`` as the step does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batchlab
from batchlab.engine.step import OPS
from batchlab.instruments import gradients
from batchlab.instruments.base import Step
from batchlab.instruments.step import noise_scale
from batchlab.instruments.step.noise_scale import DECAY as NOISE_EMA
from batchlab.instruments.step.noise_scale import STATE_SIZE as NOISE_STATE_SIZE
from batchlab.instruments.step.noise_scale import ema_weight_ratio
from batchlab.models.logreg import logreg

STREAMS = 20000


def numpy_weights(n: int, decay: float = NOISE_EMA) -> np.ndarray:
    """EMA weights of the 1st..n-th estimate after n updates: (1-d) d^(n-1-k), in float64."""
    return (1 - decay) * decay ** np.arange(n - 1, -1, -1, dtype=np.float64)


def simulate(estimates: np.ndarray) -> dict[str, np.ndarray]:
    """Run each row (a stream of |G|^2 estimates) through the engine's recursion; outputs after the last."""
    streams, steps = estimates.shape
    state = jnp.zeros((streams, NOISE_STATE_SIZE))
    step = jax.jit(jax.vmap(lambda state, grad_sq, trace: noise_scale.ema_step(state, grad_sq, trace, True, OPS)))
    traces = jnp.ones(streams)  # tr(Sigma) estimates do not enter the standard error
    for t in range(steps):
        state = step(state, jnp.asarray(estimates[:, t], jnp.float32), traces)
    return {k: np.asarray(v, np.float64) for k, v in jax.vmap(lambda s: noise_scale.outputs(s, OPS))(state).items()}


def test_weight_ratio_closed_form_matches_the_explicit_sum():
    for n in (1, 2, 3, 10, 100, 1000, 5000):
        w = numpy_weights(n)
        np.testing.assert_allclose(float(ema_weight_ratio(jnp.float32(n))), np.sum(w ** 2) / np.sum(w) ** 2,
                                   rtol=1e-4)


@pytest.mark.parametrize("steps", [2, 3, 10, 50, 400])
def test_standard_error_matches_the_spread_of_the_ema_over_streams(steps):
    rng = np.random.default_rng(steps)
    mean, sigma = 0.3, 1.0
    x = mean + sigma * rng.normal(size=(STREAMS, steps))
    out = simulate(x)
    w = numpy_weights(steps)
    # The recursion is the bias-corrected weighted mean (independent NumPy computation).
    np.testing.assert_allclose(out["noise_grad_sq"], x @ w / w.sum(), rtol=2e-4, atol=2e-5)
    # Its spread over independent streams is sigma sqrt(sum w^2) / sum w ...
    empirical_var = out["noise_grad_sq"].var(ddof=1)
    exact_var = sigma ** 2 * np.sum(w ** 2) / np.sum(w) ** 2
    assert abs(empirical_var / exact_var - 1) < 0.05, (empirical_var, exact_var)
    # ... and the reported se^2 estimates it without bias (mean over streams within 5%);
    # without the 1/(1 - f_n) correction it would be low by (1 - f_n): 50% at n = 2.
    mean_se_sq = np.mean(out["noise_grad_sq_se"] ** 2)
    assert abs(mean_se_sq / empirical_var - 1) < 0.05, (mean_se_sq, empirical_var)


def test_one_estimate_has_no_standard_error_and_no_noise_scale():
    out = simulate(np.array([[5.0]]))
    assert np.isnan(out["noise_grad_sq_se"][0]) and np.isnan(out["noise_scale"][0])
    assert out["noise_grad_sq"][0] == pytest.approx(5.0)


def test_noise_scale_is_withheld_exactly_when_not_two_standard_errors_above_zero():
    rng = np.random.default_rng(0)
    out = simulate(0.2 + rng.normal(size=(2000, 30)))  # mean near zero: both outcomes occur
    clear = out["noise_grad_sq"] > 2 * out["noise_grad_sq_se"]
    assert 0.05 < clear.mean() < 0.95
    assert np.all(np.isnan(out["noise_scale"][~clear]))
    np.testing.assert_allclose(out["noise_scale"][clear], 1.0 / out["noise_grad_sq"][clear], rtol=1e-5)


# --- a small logistic regression: per-sample gradients fed through the step's measurement ---

def _problem(n: int = 400, seed: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=n) > 0).astype(np.int32)  # not separable: finite optimum
    return jnp.asarray(x), jnp.asarray(y)


def _optimum(model, x, y):
    """Full-data minimiser of the mean loss by Newton's method (least-squares steps: the
    softmax parameterisation has a flat direction)."""
    flat, unravel = jax.flatten_util.ravel_pytree(model.init(None)[0])

    def loss(theta):
        logits, _ = model.apply(unravel(theta), {}, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])

    theta = np.asarray(flat, np.float64)
    for _ in range(20):
        g = np.asarray(jax.grad(loss)(jnp.asarray(theta, jnp.float32)), np.float64)
        h = np.asarray(jax.hessian(loss)(jnp.asarray(theta, jnp.float32)), np.float64)
        theta = theta - np.linalg.lstsq(h, g, rcond=1e-6)[0]
    return unravel(jnp.asarray(theta, jnp.float32))


def _online_noise(model, params, x, y, batch: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The noise instrument's ``update`` over ``steps`` random batches (rows drawn with
    replacement, so the two-batch |G|^2 estimator is unbiased), each split into alternate rows
    as the engine does."""
    per_sample = np.asarray(gradients.per_sample_gradients(model, params, {}, x, y), np.float64)
    rng = np.random.default_rng(seed)
    measure = jax.jit(lambda state, g_small, n_small, g_big, n_big: noise_scale.update(
        state, Step(None, None, None, OPS, ((g_small, n_small), (g_big, n_big))))[::-1])
    state, rows = jnp.zeros(NOISE_STATE_SIZE), []
    for _ in range(steps):
        g = per_sample[rng.integers(0, len(per_sample), batch)]
        small = g[::2]
        out, state = measure(state, jnp.asarray(small.mean(0), jnp.float32), len(small),
                             jnp.asarray(g.mean(0), jnp.float32), batch)
        rows.append({k: float(v) for k, v in out.items()})
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _exact(model, params, x, y) -> dict:
    return gradients.statistics_from_gram(gradients.gram_matrix(model, params, {}, x, y))


def test_at_the_optimum_the_noise_scale_is_withheld_not_a_spike():
    x, y = _problem()
    model = logreg((3,), 2)
    params = _optimum(model, x, y)
    exact = _exact(model, params, x, y)
    assert exact["grad_sq"] < 1e-6 * exact["trace"]  # at the optimum: B_simple is astronomically large
    s = _online_noise(model, params, x, y, batch=32, steps=600)
    late = slice(100, None)
    ratio = s["noise_trace"][late] / s["noise_grad_sq"][late]  # what the unguarded estimate reported
    assert np.max(np.abs(ratio)) > 100  # the spikes are there to be withheld (and of either sign)
    assert np.mean(np.isnan(s["noise_scale"][late])) > 0.8
    # The EMA of |G|^2 hovers within a few standard errors of zero.
    assert np.median(np.abs(s["noise_grad_sq"][late]) / s["noise_grad_sq_se"][late]) < 2


def test_with_a_clear_gradient_the_noise_scale_is_reported_and_close_to_exact():
    x, y = _problem()
    model = logreg((3,), 2)
    params, _ = model.init(None)  # zero: the gradient is far from zero
    exact = _exact(model, params, x, y)
    s = _online_noise(model, params, x, y, batch=32, steps=600)
    late = slice(300, None)  # the EMA (about 200 estimates) has filled
    assert np.all(np.isfinite(s["noise_scale"][late]))
    assert np.all(s["noise_grad_sq"][late] > 2 * s["noise_grad_sq_se"][late])
    assert exact["noise_scale"] / 2 < s["noise_scale"][-1] < 2 * exact["noise_scale"], (
        s["noise_scale"][-1], exact["noise_scale"])


def test_training_records_the_standard_error_and_applies_the_rule():
    s = batchlab.train("blobs", "mlp", batch_size=64, epochs=10, lr=0.01, momentum=0.9,
                       instruments="noise_scale").runs[0].steps
    assert set(noise_scale.OUTPUTS) <= set(s)
    assert np.isnan(s["noise_grad_sq_se"][0])  # one estimate: no spread yet
    clear = s["noise_grad_sq"] > 2 * s["noise_grad_sq_se"]
    assert clear[-1]
    assert np.all(np.isnan(s["noise_scale"][~clear]))
    np.testing.assert_allclose(s["noise_scale"][clear], (s["noise_trace"] / s["noise_grad_sq"])[clear], rtol=1e-4)
