"""Batch norm and ghost batch norm of the built-in models, against hand computations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batchlab.models.cnn import cnn
from batchlab.models.losses import masked_loss_sum
from batchlab.models.mlp import mlp

EPS, MOMENTUM = 1e-5, 0.1


def hand_norm(z: np.ndarray, rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise z's selected rows over rows (and positions), features last; return the
    normalised rows, their mean and their unbiased variance."""
    part = z[rows]
    axes = tuple(range(part.ndim - 1))
    mean, var = part.mean(axis=axes), part.var(axis=axes)
    count = part.size // part.shape[-1]
    return (part - mean) / np.sqrt(var + EPS), mean, var * count / (count - 1)


def mlp_by_hand(params, x, groups):
    """Logits of a one-hidden-layer relu MLP with batch norm whose statistics are taken over
    each row group in ``groups``; and the mean over groups (weighted by rows) of their means
    and unbiased variances."""
    layer, out = (jax.tree.map(lambda a: np.asarray(a, np.float64), p) for p in params)
    z = x @ layer["w"] + layer["b"]
    normed = np.zeros_like(z)
    means, variances, counts = [], [], []
    for rows in groups:
        normed[rows], mean, var = hand_norm(z, rows)
        means.append(mean), variances.append(var), counts.append(len(np.arange(len(z))[rows]))
    h = np.maximum(normed * layer["scale"] + layer["shift"], 0.0)
    share = np.array(counts, float)[:, None] / sum(counts)
    return h @ out["w"] + out["b"], (share * means).sum(0), (share * variances).sum(0)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)).astype(np.float32) * 3 + 1
    model = mlp((5,), 3, hidden=(7,), norm="batch")
    params, state = model.init(jax.random.PRNGKey(1))
    # non-trivial scale and shift, so a mix-up of the two would show
    params[0]["scale"] = jnp.linspace(0.5, 2.0, 7)
    params[0]["shift"] = jnp.linspace(-1.0, 1.0, 7)
    return x, params, state


def test_train_mode_uses_the_real_rows_statistics_of_a_partial_batch(setup):
    x, params, state = setup
    model = mlp((5,), 3, hidden=(7,), norm="batch")
    mask = jnp.array([1.0] * 9 + [0.0] * 3)  # the last three rows are padding
    junk = x.copy()
    junk[9:] = 1e3  # padding that would wreck the statistics if it entered them
    logits, new = model.apply(params, state, junk, train=True, key=None, mask=mask)
    expected, mean, var = mlp_by_hand(params, x.astype(np.float64), [slice(0, 9)])
    np.testing.assert_allclose(np.asarray(logits)[:9], expected[:9], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["norm"][0]["mean"], MOMENTUM * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["norm"][0]["var"], (1 - MOMENTUM) + MOMENTUM * var, rtol=1e-4)


def test_padded_rows_change_neither_loss_gradient_nor_state(setup):
    x, params, state = setup
    model = mlp((5,), 3, hidden=(7,), norm="batch")
    y = jnp.arange(12) % 3
    value_and_grad = jax.value_and_grad(masked_loss_sum, argnums=1, has_aux=True)
    grad = jax.jit(lambda p, s, x, y, m: value_and_grad(model, p, s, x, y, m, train=True, key=None))
    (loss, (_, real_state)), g = grad(params, state, x[:9], y[:9], jnp.ones(9))
    padded = np.concatenate([x[:9], np.full((3, 5), 50.0, np.float32)])
    (loss_p, (_, pad_state)), g_p = grad(params, state, padded, y, jnp.array([1.0] * 9 + [0.0] * 3))
    np.testing.assert_allclose(loss_p, loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves((g_p, pad_state)), jax.tree.leaves((g, real_state))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_eval_mode_uses_the_running_statistics(setup):
    x, params, _ = setup
    model = mlp((5,), 3, hidden=(7,), norm="batch")
    mean, var = np.linspace(-2, 2, 7), np.linspace(0.5, 3.0, 7)
    state = {"norm": [{"mean": jnp.asarray(mean, jnp.float32), "var": jnp.asarray(var, jnp.float32)}]}
    logits, kept = model.apply(params, state, x, train=False, key=None)
    layer, out = (jax.tree.map(lambda a: np.asarray(a, np.float64), p) for p in params)
    z = (x @ layer["w"] + layer["b"] - mean) / np.sqrt(var + EPS)
    expected = np.maximum(z * layer["scale"] + layer["shift"], 0.0) @ out["w"] + out["b"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(state)):  # evaluation moves no statistics
        np.testing.assert_array_equal(a, b)


def test_ghost_size_at_least_the_batch_is_batch_norm(setup):
    x, params, state = setup
    plain = mlp((5,), 3, hidden=(7,), norm="batch").apply(params, state, x, train=True, key=None)
    for size in (12, 64):
        ghost = mlp((5,), 3, hidden=(7,), norm="ghost", ghost_size=size).apply(params, state, x, train=True, key=None)
        for a, b in zip(jax.tree.leaves(ghost), jax.tree.leaves(plain)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_ghost_batches_of_a_quarter_normalise_each_quarter_by_its_own_statistics(setup):
    x, params, state = setup
    model = mlp((5,), 3, hidden=(7,), norm="ghost", ghost_size=3)
    logits, new = model.apply(params, state, x, train=True, key=None)
    quarters = [slice(i, i + 3) for i in range(0, 12, 3)]
    expected, mean, var = mlp_by_hand(params, x.astype(np.float64), quarters)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new["norm"][0]["mean"], MOMENTUM * mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new["norm"][0]["var"], (1 - MOMENTUM) + MOMENTUM * var, rtol=1e-4)
    # and it differs from plain batch norm, so the test above could tell them apart
    plain = mlp((5,), 3, hidden=(7,), norm="batch").apply(params, state, x, train=True, key=None)[0]
    assert np.max(np.abs(np.asarray(plain) - expected)) > 1e-2


def test_cnn_normalises_each_channel_over_rows_and_positions():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4, 4, 1)).astype(np.float32)
    model = cnn((4, 4, 1), 2, norm="batch")
    params, state = model.init(jax.random.PRNGKey(0))
    mask = jnp.array([1.0] * 5 + [0.0])
    _, new = jax.jit(lambda p, s, x, m: model.apply(p, s, x, train=True, key=None, mask=m))(params, state, x, mask)
    # the first conv's pre-norm output by hand: 3x3 'same' convolution of the real rows
    w, b = np.asarray(params["conv"][0]["w"], np.float64), np.asarray(params["conv"][0]["b"], np.float64)
    padded = np.pad(x[:5].astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    z = sum(padded[:, i:i + 4, j:j + 4, :] @ w[i, j] for i in range(3) for j in range(3)) + b
    _, mean, var = hand_norm(z, slice(None))
    np.testing.assert_allclose(new["norm"][0]["mean"], MOMENTUM * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["norm"][0]["var"], (1 - MOMENTUM) + MOMENTUM * var, rtol=1e-4)
