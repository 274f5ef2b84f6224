"""Every gradient path (whole batch, micro-batches, two halves) against the whole batch,
with dropout on: the same per-row dropout masks, hence the same gradient and model state
(see ``batchlab/engine/step.py``'s docstring for the definitions)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batchlab
from batchlab.engine.gradients import Batch, batch_gradient
from batchlab.engine.rowkey import row_key
from batchlab.models.base import Model
from batchlab.models.cnn import cnn
from batchlab.models.mlp import mlp

SIZE = 10  # batch rows; micro-batch sizes below include divisors and non-divisors


def problem(n=23, shape=(4,), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


def a_batch(real=SIZE):
    """Ten shuffled rows of the data; the last ``SIZE - real`` are padding (masked)."""
    index = jnp.asarray(np.random.default_rng(5).permutation(23)[:SIZE])
    return Batch(index, (jnp.arange(SIZE) < real).astype(jnp.float32))


def assert_same(a, b, rtol=2e-5, atol=1e-6):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


@functools.cache
def dropout_mlp():
    return mlp((4,), 3, (16, 12), dropout_rate=0.5)


KEY = jax.random.PRNGKey(7)


@functools.cache
def compiled(model, micro_batch, split):
    return jax.jit(lambda p, s, d, b, k: batch_gradient(model, p, s, d, b, k, micro_batch, split=split))


def gradient(model, params, state, data, batch, key, micro_batch, split=False):
    """``batch_gradient`` compiled once per model and path (eager dispatch of its many small
    ops is slow)."""
    return compiled(model, micro_batch, split)(params, state, data, batch, key)


def test_dropout_is_on_and_depends_on_the_key():
    # Guards the tests below: with no dropout every path would agree trivially.
    model, data = dropout_mlp(), problem()
    params, _ = model.init(jax.random.PRNGKey(1))
    one = gradient(model, params, {}, data, a_batch(), KEY, None)
    other = gradient(model, params, {}, data, a_batch(), jax.random.PRNGKey(8), None)
    off = gradient(mlp((4,), 3, (16, 12)), params, {}, data, a_batch(), KEY, None)
    assert not np.allclose(one.grad_sum[0]["w"], other.grad_sum[0]["w"])
    assert not np.allclose(one.grad_sum[0]["w"], off.grad_sum[0]["w"])


# micro-batch sizes that divide the batch or not; a full batch and a partial one (3 padded rows)
@pytest.mark.parametrize("micro, real", [(1, SIZE), (3, SIZE), (5, SIZE), (9, SIZE), (3, 7), (4, 7)])
def test_micro_batches_give_the_whole_batch_gradient_with_dropout(micro, real):
    model, data = dropout_mlp(), problem()
    params, _ = model.init(jax.random.PRNGKey(1))
    whole = gradient(model, params, {}, data, a_batch(real), KEY, None)
    parts = gradient(model, params, {}, data, a_batch(real), KEY, micro)
    np.testing.assert_allclose(parts.loss_sum, whole.loss_sum, rtol=1e-5)
    np.testing.assert_allclose(parts.correct, whole.correct)
    assert_same(parts.grad_sum, whole.grad_sum)


@pytest.mark.parametrize("real", [SIZE, 7])
def test_two_halves_sum_to_the_whole_batch_gradient_with_dropout(real):
    model, data = dropout_mlp(), problem()
    params, _ = model.init(jax.random.PRNGKey(1))
    whole = gradient(model, params, {}, data, a_batch(real), KEY, None)
    halves = gradient(model, params, {}, data, a_batch(real), KEY, None, split=True)
    np.testing.assert_allclose(halves.loss_sum, whole.loss_sum, rtol=1e-5)
    assert_same(halves.grad_sum, whole.grad_sum)
    # The first half alone: the batch's even rows, with the masks those rows get in the whole batch.
    half_sum, half_rows = halves.first_half
    assert float(half_rows) == len(range(0, real, 2))
    weights = np.zeros(SIZE, np.float32)
    weights[:real:2] = 1.0  # the whole batch's forward pass (its masks), counting only the even rows' losses
    only_even = Batch(a_batch(real).index, jnp.asarray(weights))
    expected = gradient(model, params, {}, data, only_even, KEY, None).grad_sum
    assert not np.allclose(expected[0]["w"], whole.grad_sum[0]["w"])
    assert_same(half_sum, expected)


def test_cnn_micro_batches_and_halves_with_dropout():
    model = cnn((8, 8, 1), 3, dropout_rate=0.5)
    data = problem(shape=(8, 8, 1))
    params, _ = model.init(jax.random.PRNGKey(2))
    whole = gradient(model, params, {}, data, a_batch(), KEY, None)
    assert_same(gradient(model, params, {}, data, a_batch(), KEY, 3).grad_sum, whole.grad_sum)
    assert_same(gradient(model, params, {}, data, a_batch(), KEY, None, split=True).grad_sum, whole.grad_sum)


def test_a_row_gets_the_same_mask_in_any_part():
    whole = jax.random.bernoulli(jax.random.fold_in(row_key(KEY, 0, 1), 3), 0.5, (SIZE, 6))
    chunk = jax.random.bernoulli(jax.random.fold_in(row_key(KEY, 4, 1), 3), 0.5, (3, 6))
    odd = jax.random.bernoulli(jax.random.fold_in(row_key(KEY, 1, 2), 3), 0.5, (5, 6))
    np.testing.assert_array_equal(chunk, whole[4:7])
    np.testing.assert_array_equal(odd, whole[1::2])
    assert 0.2 < float(whole.mean()) < 0.8 and not np.array_equal(whole[0], whole[1])


def counting_model() -> Model:
    """A linear model whose state counts its training calls and keeps a running mean of its
    inputs (the kind of state batch norm has), with dropout on its input."""

    def init(key):
        params = {"w": jax.random.normal(key, (4, 3)) * 0.5, "b": jnp.zeros(3)}
        return params, {"calls": jnp.int32(0), "mean": jnp.zeros(4)}

    def apply(params, state, x, *, train=False, key=None):
        if train:
            state = {"calls": state["calls"] + 1, "mean": 0.9 * state["mean"] + 0.1 * x.mean(axis=0)}
            keep = jax.random.bernoulli(key, 0.5, x.shape)
            x = jnp.where(keep, 2 * x, 0.0)
        return x @ params["w"] + params["b"], state

    return Model(init, apply, "counting")


@pytest.mark.parametrize("path", [dict(micro_batch=2), dict(micro_batch=5), dict(micro_batch=None, split=True)])
def test_model_state_changes_once_per_step_as_for_the_whole_batch(path):
    model, data = counting_model(), problem()
    params, state = model.init(jax.random.PRNGKey(3))
    state = {"calls": jnp.int32(4), "mean": jnp.full(4, 0.25)}
    whole = gradient(model, params, state, data, a_batch(), KEY, None)
    part = gradient(model, params, state, data, a_batch(), KEY, **path)
    assert int(whole.model_state["calls"]) == 5 and int(part.model_state["calls"]) == 5
    assert part.model_state["calls"].dtype == jnp.int32
    expected_mean = 0.9 * 0.25 + 0.1 * np.asarray(data[0])[np.asarray(a_batch().index)].mean(axis=0)
    np.testing.assert_allclose(whole.model_state["mean"], expected_mean, rtol=1e-5)
    np.testing.assert_allclose(part.model_state["mean"], expected_mean, rtol=1e-5)
    assert_same(part.grad_sum, whole.grad_sum)


def test_training_with_micro_batches_and_dropout_equals_whole_batches():
    kwargs = dict(batch_size=40, epochs=2, lr=0.1, momentum=0.9, hidden=(32,), dropout=0.5)
    whole = batchlab.train("digits", "mlp", **kwargs).runs[0]
    micro = batchlab.train("digits", "mlp", micro_batch=12, **kwargs).runs[0]
    np.testing.assert_allclose(micro.steps["mb_loss"], whole.steps["mb_loss"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(micro.history["test_loss"], whole.history["test_loss"], rtol=1e-3)
    assert_same(micro.params, whole.params, rtol=1e-3, atol=1e-5)


def test_noise_instruments_with_dropout_do_not_change_training():
    # The noise instruments compute each batch's gradient as two halves (engine/step.py).
    kwargs = dict(batch_size=40, epochs=2, lr=0.1, momentum=0.9, hidden=(32,), dropout=0.5)
    bare = batchlab.train("digits", "mlp", **kwargs).runs[0]
    measured = batchlab.train("digits", "mlp", instruments="noise_scale", **kwargs).runs[0]
    np.testing.assert_allclose(measured.steps["mb_loss"], bare.steps["mb_loss"], rtol=1e-3, atol=1e-5)
    assert_same(measured.params, bare.params, rtol=1e-3, atol=1e-5)
