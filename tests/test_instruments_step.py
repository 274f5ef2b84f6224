"""Per-step instruments against recomputation outside the engine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batchlab
from batchlab.instruments.step.noise_scale import two_batch_estimates
from batchlab.errors import BatchlabError
from batchlab.instruments import resolve_instruments
from batchlab.models.logreg import logreg
from batchlab.models.mlp import mlp


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(tree)])


def mean_loss(model, params, x, y):
    logits, _ = model.apply(params, {}, x)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(y)), y])


def test_norms_of_full_batch_gradient_descent_from_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    lr = 0.5
    res = batchlab.train((x, y, x, y), "logreg", batch_size="full", epochs=3, lr=lr,
                         instruments="standard,weight_norm").runs[0]
    s = res.steps
    model = logreg((3,), 2)
    zero, _ = model.init(None)
    g0 = flat(jax.grad(mean_loss, argnums=1)(model, zero, x, y))
    np.testing.assert_allclose(s["grad_norm"][0], np.linalg.norm(g0), rtol=1e-5)
    np.testing.assert_allclose(s["update_norm"], lr * s["grad_norm"], rtol=1e-5)  # plain SGD
    np.testing.assert_allclose(s["dist_init"], s["weight_norm"], rtol=1e-6)  # started at zero
    np.testing.assert_allclose(s["dist_init"][-1], np.linalg.norm(flat(res.params)), rtol=1e-5)


@pytest.mark.parametrize("hidden", [(6,), (100, 100)])
def test_distance_and_update_match_stored_parameters_with_momentum(hidden):
    kwargs = dict(batch_size="full", lr=0.05, momentum=0.9, hidden=hidden, instruments="standard,weight_norm")
    two = batchlab.train("blobs", "mlp", epochs=2, **kwargs).runs[0]
    three = batchlab.train("blobs", "mlp", epochs=3, **kwargs).runs[0]
    model = mlp((2,), 3, hidden)
    with jax.threefry_partitionable(False):  # the engine's random stream
        init, _ = model.init(jax.random.PRNGKey(0))
    theta0, theta2, theta3 = flat(init), flat(two.params), flat(three.params)
    s = three.steps
    np.testing.assert_allclose(s["dist_init"][-1], np.linalg.norm(theta3 - theta0), rtol=1e-5)
    np.testing.assert_allclose(s["dist_init"][1], np.linalg.norm(theta2 - theta0), rtol=1e-5)
    np.testing.assert_allclose(s["update_norm"][-1], np.linalg.norm(theta3 - theta2), rtol=1e-4)
    np.testing.assert_allclose(s["weight_norm"][-1], np.linalg.norm(theta3), rtol=1e-5)
    g2 = flat(jax.grad(lambda p: mean_loss(model, p, *_blobs_train()))(two.params))
    np.testing.assert_allclose(s["grad_norm"][-1], np.linalg.norm(g2), rtol=1e-4)


def test_measuring_norms_does_not_change_training():
    # With per-step norms the engine trains on one flat parameter vector (engine/flat.py).
    kwargs = dict(batch_size=64, epochs=3, lr=0.05, momentum=0.9, seeds=2)
    bare = batchlab.train("digits", "mlp", **kwargs)
    measured = batchlab.train("digits", "mlp", instruments="standard", **kwargs)
    for a, b in zip(bare.runs, measured.runs):
        np.testing.assert_allclose(flat(b.params), flat(a.params), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.history["test_loss"], a.history["test_loss"], rtol=1e-5)
        np.testing.assert_allclose(b.steps["mb_loss"], a.steps["mb_loss"], rtol=1e-5)
        assert jax.tree.structure(b.params) == jax.tree.structure(a.params)


def test_flat_model_round_trip():
    from batchlab.engine.flat import flat_model
    from batchlab.models.cnn import cnn

    model = cnn((8, 8, 1), 10)
    key = jax.random.PRNGKey(3)
    tree, state = model.init(key)
    flat_net, unravel = flat_model(model)
    vector, _ = flat_net.init(key)
    assert vector.shape == (sum(a.size for a in jax.tree.leaves(tree)),)
    np.testing.assert_array_equal(flat(unravel(vector)), flat(tree))
    stacked = unravel(jnp.stack([vector, 2 * vector]))  # a cohort's parameters, one row per run
    np.testing.assert_array_equal(flat(jax.tree.map(lambda a: a[1], stacked)), 2 * flat(tree))
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(flat_net.apply(vector, state, x)[0], model.apply(tree, state, x)[0])


def _blobs_train():
    from batchlab.data import load_dataset, resolve_data_config

    ds = load_dataset(resolve_data_config("blobs"))
    return ds.x_train, ds.y_train


def test_two_batch_estimator_is_unbiased_on_a_known_problem():
    rng = np.random.default_rng(1)
    dim, trials, b_small, b_big = 5, 20000, 4, 16
    mean = rng.normal(size=dim)
    scales = np.array([0.5, 1.0, 2.0, 0.3, 1.5])
    true_g2, true_trace = float(mean @ mean), float(np.sum(scales ** 2))
    samples = mean + scales * rng.normal(size=(trials, b_big, dim))
    g_small = samples[:, :b_small].mean(axis=1)  # the small batch is part of the big one, as in the engine
    g_big = samples.mean(axis=1)
    g2, trace = jax.vmap(lambda s, b: two_batch_estimates(s @ s, b_small, b @ b, b_big))(jnp.asarray(g_small),
                                                                                         jnp.asarray(g_big))
    g2, trace = np.asarray(g2, np.float64), np.asarray(trace, np.float64)
    for estimate, truth in ((g2, true_g2), (trace, true_trace)):
        standard_error = estimate.std() / np.sqrt(trials)
        assert abs(estimate.mean() - truth) < 4 * standard_error, (estimate.mean(), truth, standard_error)


def test_noise_scale_is_recorded_in_training():
    res = batchlab.train("blobs", "mlp", batch_size=64, epochs=20, lr=0.01, momentum=0.9, instruments="full").runs[0]
    s = res.steps
    assert {"noise_grad_sq", "noise_trace", "noise_scale", "noise_grad_sq_se"} <= set(s)
    assert np.isfinite(s["noise_scale"][-1])  # the value itself: test_noise_estimates_match_..._by_hand


def _logreg_problem(n: int):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.int32)
    return x, y


def test_two_batch_estimate_of_the_first_step_by_hand():
    # Full batch, unshuffled, from zero: the first step's estimate is the two-batch formula
    # on the batch's alternate rows (the small batch) and all rows (the big one).
    x, y = _logreg_problem(41)
    s = batchlab.train((x, y, x, y), "logreg", batch_size="full", epochs=1, lr=0.1, shuffle="never",
                       instruments="noise_scale").runs[0].steps
    model = logreg((3,), 2)
    zero, _ = model.init(None)
    g_big = flat(jax.grad(mean_loss, argnums=1)(model, zero, x, y))
    g_small = flat(jax.grad(mean_loss, argnums=1)(model, zero, x[::2], y[::2]))
    n_small, n_big = 21, 41
    grad_sq = (n_big * g_big @ g_big - n_small * g_small @ g_small) / (n_big - n_small)
    trace = (g_small @ g_small - g_big @ g_big) / (1 / n_small - 1 / n_big)
    np.testing.assert_allclose(s["noise_grad_sq"][0], grad_sq, rtol=1e-4)
    np.testing.assert_allclose(s["noise_trace"][0], trace, rtol=1e-4)


def expected_noise(x, y, batch_size: int, epochs: int, lr: float) -> dict[str, np.ndarray]:
    """The noise instruments of plain SGD on logreg from zero, unshuffled, recomputed outside
    the engine: each step's two halves (alternate rows) get their gradients from
    ``jax.grad`` separately, the batch's gradient is their row-weighted mean, then the
    two-batch formulas (science.md section 4) and the bias-corrected EMAs (decay 0.99), the
    standard error and the withholding rule, written out in numpy (float64)."""
    model = logreg((3,), 2)
    theta, _ = model.init(None)
    grad = jax.grad(mean_loss, argnums=1)
    d, ema, n_updates = 0.99, np.zeros(3), 0
    out = {k: [] for k in ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale")}
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            rows = np.arange(start, min(start + batch_size, len(x)))
            small, other = rows[0::2], rows[1::2]
            if len(other):  # a batch of one row cannot be split: the EMAs stay as they were
                g_small = flat(grad(model, theta, x[small], y[small]))
                g_other = flat(grad(model, theta, x[other], y[other]))
                b_s, b_b = len(small), len(rows)
                g_big = (b_s * g_small + len(other) * g_other) / b_b
                grad_sq = (b_b * g_big @ g_big - b_s * g_small @ g_small) / (b_b - b_s)
                trace = (g_small @ g_small - g_big @ g_big) / (1 / b_s - 1 / b_b)
                ema = d * ema + (1 - d) * np.array([grad_sq, trace, grad_sq ** 2])
                n_updates += 1
            c = 1 - d ** n_updates
            mean_sq, mean_tr = ema[0] / c, ema[1] / c
            f = (1 - d) / (1 + d) * (1 + d ** n_updates) / (1 - d ** n_updates)
            se = np.sqrt(f * max(ema[2] / c - mean_sq ** 2, 0) / (1 - f)) if n_updates >= 2 else np.nan
            out["noise_grad_sq"].append(mean_sq)
            out["noise_trace"].append(mean_tr)
            out["noise_grad_sq_se"].append(se)
            out["noise_scale"].append(mean_tr / mean_sq if mean_sq > 2 * se else np.nan)
            full = grad(model, theta, x[rows], y[rows])  # plain SGD on the batch's mean gradient
            theta = jax.tree.map(lambda t, g: t - lr * g, theta, full)
    return {k: np.array(v) for k, v in out.items()}


# batches of 16, 16, 9 rows; of 8 x 5 and one row (which cannot be split)
@pytest.mark.parametrize("batch_size, epochs", [(16, 8), (8, 4)])
def test_noise_estimates_match_the_formula_on_separately_computed_halves(batch_size, epochs):
    x, y = _logreg_problem(41)
    res = batchlab.train((x, y, x, y), "logreg", batch_size=batch_size, epochs=epochs, lr=0.05, shuffle="never",
                         instruments="noise_scale").runs[0]
    want = expected_noise(x, y, batch_size, epochs, lr=0.05)
    for name in ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale"):
        np.testing.assert_allclose(res.steps[name], want[name], rtol=5e-4, atol=1e-7, err_msg=name)
    assert np.isnan(want["noise_scale"][0]) and np.isfinite(want["noise_scale"]).any()


def test_instrument_names_and_presets():
    assert resolve_instruments("cheap") == ("grad_norm", "update_norm")
    assert resolve_instruments("standard") == ("dist_init", "grad_norm", "update_norm")
    assert resolve_instruments("noise_scale") == ("noise_grad_sq", "noise_grad_sq_se", "noise_scale", "noise_trace")
    with pytest.raises(BatchlabError, match="unknown instrument 'hessian_wow'"):
        resolve_instruments("hessian_wow")
    with pytest.raises(BatchlabError, match="micro-batch"):
        batchlab.train("blobs", "mlp", batch_size=64, epochs=1, instruments="full", micro_batch=16)
