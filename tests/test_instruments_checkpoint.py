"""Checkpoint instruments against brute force on tiny problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from batchlab.models.losses import masked_loss_sum
from batchlab.instruments import gradients, hessian
from batchlab.models.mlp import mlp


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(24, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, size=24), jnp.int32)
    model = mlp((3,), 3, (5,))
    params, _ = model.init(jax.random.PRNGKey(3))
    return model, params, x, y


def loop_gradients(model, params, x, y):
    """One jax.grad call per sample: the brute-force reference."""
    rows = []
    for i in range(x.shape[0]):
        g = jax.grad(lambda p: masked_loss_sum(model, p, {}, x[i:i + 1], y[i:i + 1], jnp.ones(1),
                                               train=False, key=None)[0])(params)
        rows.append(np.asarray(ravel_pytree(g)[0], np.float64))
    return np.stack(rows)


def test_gradient_statistics_equal_a_plain_loop(tiny):
    model, params, x, y = tiny
    fast = gradients.per_sample_gradients(model, params, {}, x, y, chunk=7)  # chunks of unequal size
    slow = loop_gradients(model, params, x, y)
    np.testing.assert_allclose(np.asarray(fast), slow, rtol=1e-5, atol=1e-6)
    stats = gradients.statistics_from_gram(slow @ slow.T)
    mean = slow.mean(axis=0)
    trace = sum(np.sum((g - mean) ** 2) for g in slow) / len(slow)
    np.testing.assert_allclose(stats["grad_sq"], mean @ mean, rtol=1e-5)
    np.testing.assert_allclose(stats["trace"], trace, rtol=1e-5)
    np.testing.assert_allclose(stats["noise_scale"], trace / (mean @ mean), rtol=1e-5)
    cosines = [slow[i] @ slow[j] / np.linalg.norm(slow[i]) / np.linalg.norm(slow[j])
               for i in range(len(slow)) for j in range(len(slow)) if i != j]
    np.testing.assert_allclose(stats["mean_cosine"], np.mean(cosines), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["mean_sample_norm"], np.linalg.norm(slow, axis=1).mean(), rtol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "logreg"])
def test_factorized_gram_equals_inner_products_of_per_sample_gradients(tiny, name):
    from batchlab.models.logreg import logreg

    _, _, x, y = tiny
    model = mlp((3,), 3, (5, 4)) if name == "mlp" else logreg((3,), 3)
    params, _ = model.init(jax.random.PRNGKey(5))
    if name == "logreg":  # move away from the zero init
        params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
    rows = loop_gradients(model, params, x, y)
    np.testing.assert_allclose(gradients.gram_matrix(model, params, {}, x, y), rows @ rows.T, rtol=1e-4, atol=1e-5)
    generic = model._replace(dense_taps=None)  # the per-sample-gradient path
    np.testing.assert_allclose(gradients.gram_matrix(generic, params, {}, x, y), rows @ rows.T, rtol=1e-4, atol=1e-5)


def test_gram_gives_the_exact_batch_gradient_norm(tiny):
    model, params, x, y = tiny
    k = gradients.gram_matrix(model, params, {}, x, y)
    rows = loop_gradients(model, params, x, y)
    for index in (np.array([[3, 3, 7, 20], [0, 1, 2, 5]]),  # B*B <= P: gathered
                  np.random.default_rng(0).integers(0, 24, size=(3, 9))):  # counted
        expected = [np.sum(rows[i], axis=0) @ np.sum(rows[i], axis=0) for i in index]
        np.testing.assert_allclose(gradients.batch_sq_norms(k, index), expected, rtol=1e-5)


def test_batches_without_replacement_have_distinct_rows():
    index = gradients.draw_batches(np.random.default_rng(0), 30, 12, 50, replace=False)
    assert index.shape == (50, 12) and all(len(set(row)) == 12 for row in index)
    assert index.max() < 30


@pytest.mark.parametrize("replace", [True, False])
def test_monte_carlo_mean_matches_theory(tiny, replace):
    model, params, x, y = tiny
    k = gradients.gram_matrix(model, params, {}, x, y)
    stats = gradients.statistics_from_gram(k)
    sizes = [1, 2, 5, 12, 24]
    trials = 4000
    draws = gradients.monte_carlo(k, sizes, trials, seed=0, replace=replace)
    for b in sizes:
        mean_sq = draws[b] / b ** 2  # batch-mean gradient
        theory = gradients.expected_sq_norm(stats["grad_sq"], stats["trace"], np.array([b]), 24, replace=replace,
                                            reduction="mean")[0]
        if not replace and b == 24:  # the whole pool: no noise left at all
            np.testing.assert_allclose(mean_sq, stats["grad_sq"], rtol=1e-4)
            continue
        standard_error = mean_sq.std() / np.sqrt(trials)
        assert abs(mean_sq.mean() - theory) < 4 * standard_error + 1e-6 * theory, (b, mean_sq.mean(), theory)


def test_lambda_max_and_trace_against_the_dense_hessian(tiny):
    model, params, x, y = tiny

    def loss(p):
        return masked_loss_sum(model, p, {}, x, y, jnp.ones(x.shape[0]), train=False, key=None)[0] / x.shape[0]

    f, theta = hessian.flat_loss(loss, params)
    dense = np.asarray(jax.hessian(f)(theta), np.float64)
    eigenvalues = np.linalg.eigvalsh((dense + dense.T) / 2)
    largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
    assert largest > 0
    np.testing.assert_allclose(hessian.lambda_max(loss, params, iterations=5000, tol=1e-9), largest, rtol=1e-4)
    estimate, standard_error = hessian.hutchinson_trace(loss, params, samples=400)
    assert abs(estimate - np.trace(dense)) < 4 * standard_error


def test_fitted_exponent():
    b = np.array([1, 2, 4, 8, 16])
    assert gradients.fitted_exponent(b, 3 * b) == pytest.approx(1.0)
    assert gradients.fitted_exponent(b, 0.5 * b ** 2) == pytest.approx(2.0)
