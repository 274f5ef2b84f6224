"""optax_monitor in a user's JAX loop against batchlab's JAX engine on the same model, initial
weights and batch order: the same grad_norm, update_norm, dist_init and two-batch estimates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from batchlab.api import prepare, run_configs
from batchlab.engine.epoch import EpochOrders
from batchlab.errors import BatchlabError
from batchlab.models import Model
from batchlab.monitor import OptaxRecorder, optax_monitor
from batchlab.store import Store

N, N_TEST, FEATURES, CLASSES, WIDTH, B, LR, EPOCHS = 96, 32, 5, 3, 16, 16, 0.1, 2  # 12 updates
NOISE = ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale")


def init(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (FEATURES, WIDTH)) / 2, "b1": jnp.zeros(WIDTH),
            "w2": jax.random.normal(k2, (WIDTH, CLASSES)) / 4, "b2": jnp.zeros(CLASSES)}, {}


def apply(params, state, x, *, train=False, key=None):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"], state


MODEL = Model(init, apply, name="tiny", rowwise=True)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + N_TEST, FEATURES)).astype(np.float32)
    y = np.argmax(x[:, :CLASSES] + 0.5 * rng.normal(size=(len(x), CLASSES)), axis=1).astype(np.int32)
    return x[:N], y[:N], x[N:], y[N:]


def through_engine(data, instruments):
    configs, dataset, net = prepare(data, MODEL, batch_size=B, epochs=EPOCHS, lr=LR, seeds=1,
                                    instruments=instruments, standardize=False)
    run = run_configs(configs, dataset, net, checkpoints=(0,)).runs[0]
    assert run.status == "finished"
    return run.steps, run.checkpoints[0]


def loss_fn(params, xb, yb):
    return optax.softmax_cross_entropy_with_integer_labels(apply(params, {}, xb)[0], yb).mean()


def user_loop(data, params, tx, halves, record):
    x, y = data[0], data[1]
    state = tx.init(params)

    @jax.jit
    def call(params, state, xb, yb):
        grads = jax.grad(loss_fn)(params, xb, yb)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    orders = EpochOrders([0], N, "every-epoch")
    for _ in range(EPOCHS):
        order = orders.next()[0]
        for s in range(N // B):
            rows = order[s * B:(s + 1) * B]
            for part in ((rows[0::2], rows[1::2]) if halves else (rows,)):  # the engine's halves
                params, state = call(params, state, x[part], y[part])
            record.read(state)
    record.close()
    return record.steps()


def test_optax_monitor_records_the_engine_s_instruments(data, tmp_path):
    theirs, params0 = through_engine(data, ("grad_norm", "update_norm", "dist_init"))
    record = OptaxRecorder(tmp_path / "o.db", "optax", batch_size=B, lr=LR)
    ours = user_loop(data, params0, optax_monitor(optax.sgd(LR)), False, record)
    assert len(ours["step"]) == 12
    np.testing.assert_array_equal(ours["samples_seen"], theirs["samples_seen"])
    for name in ("grad_norm", "update_norm", "dist_init"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, err_msg=name)
    assert theirs["dist_init"][-1] > 3 * theirs["dist_init"][0]
    with Store(tmp_path / "o.db", create=False) as store:
        (run,) = store.load()
    assert run.kind == "monitored" and run.status == "finished" and run.config.batch_size == B
    np.testing.assert_array_equal(run.steps["grad_norm"], ours["grad_norm"])


def test_outside_multisteps_it_gives_the_engine_s_two_batch_estimate(data):
    theirs, params0 = through_engine(data, ("grad_norm", "update_norm", "noise_scale"))
    tx = optax_monitor(optax.MultiSteps(optax.sgd(LR), every_k_schedule=2), micro_batches=2,
                       micro_batch_size=B // 2)
    ours = user_loop(data, params0, tx, True, OptaxRecorder(None, batch_size=B))
    np.testing.assert_array_equal(ours["step"], np.arange(1, 13))
    for name in ("grad_norm", "update_norm") + NOISE:
        assert np.array_equal(np.isnan(ours[name]), np.isnan(theirs[name])), name
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, equal_nan=True, err_msg=name)


def test_bad_input_is_one_line():
    with pytest.raises(BatchlabError, match="needs micro-batches"):
        optax_monitor(optax.sgd(LR), instruments="noise_scale")
    tx = optax_monitor(optax.sgd(LR))
    params = {"w": jnp.ones(3)}
    with pytest.raises(BatchlabError, match="needs the parameters"):
        tx.update(params, tx.init(params))
    with pytest.raises(BatchlabError, match="no optax_monitor state"):
        OptaxRecorder(None, batch_size=4).read(optax.sgd(LR).init(params))
