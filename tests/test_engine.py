"""The engine against independent computations on tiny problems."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import batchlab
from batchlab.config import EarlyStopping, OptimizerConfig
from batchlab.engine.epoch import EpochOrders, batch_rows
from batchlab.engine.optim import make_optimizer
from batchlab.engine.gradients import Batch, batch_gradient
from batchlab.engine.step import RunState, train_step
from batchlab.models.logreg import logreg
from batchlab.models.mlp import mlp


def tiny_problem(n=13, features=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    y[:classes] = np.arange(classes)
    return x, y


def plain_mean_loss(model, params, x, y):
    logits, _ = model.apply(params, {}, x, train=False)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(logp[jnp.arange(len(y)), y])


@pytest.mark.parametrize("n, b, drop_last", [(500, 450, False), (500, 450, True), (13, 4, False), (13, 4, True),
                                            (12, 4, False), (7, 1, False), (7, 7, False)])
@pytest.mark.parametrize("shuffle", ["every-epoch", "once", "never"])
@pytest.mark.parametrize("extra", [0, 3])  # a program as wide as B, or wider (padded, masked slots)
def test_each_sample_once_per_epoch(n, b, drop_last, shuffle, extra):
    steps = batchlab.budget.steps_per_epoch(n, b, drop_last)
    orders = EpochOrders([3], n, shuffle)
    width = b + extra
    for epoch in (1, 2):
        order = orders.next()[0]
        padded = jnp.concatenate([jnp.asarray(order), jnp.zeros(width, jnp.int32)])
        rows = [batch_rows(padded, s, b, width) for s in range(steps)]
        index, mask = np.stack([r.index for r in rows]), np.stack([r.mask for r in rows])
        assert index.shape == (steps, width)
        assert (mask[:, b:] == 0).all()  # slots past B never count
        np.testing.assert_array_equal(index[:, :b][mask[:, :b] > 0],  # consecutive slices of the order
                                      order[:int(mask.sum())])
        used = index[mask > 0]
        assert len(used) == len(set(used.tolist()))  # disjoint
        expected = steps * b if drop_last else n
        assert len(used) == expected
        if not drop_last:
            assert sorted(used.tolist()) == list(range(n))  # covers the training set


def test_shuffle_modes_change_order_as_documented():
    every = EpochOrders([0, 1], 50, "every-epoch")
    a1, a2 = every.next(), every.next()
    assert not np.array_equal(a1[0], a2[0])  # a new order each epoch
    assert not np.array_equal(a1[0], a1[1])  # per-run data seed
    assert np.array_equal(EpochOrders([0, 1], 50, "every-epoch").next(), a1)  # reproducible
    once = EpochOrders([0], 50, "once")
    o1, o2 = once.next(), once.next()
    assert np.array_equal(o1, o2) and not np.array_equal(o1[0], np.arange(50))
    assert np.array_equal(EpochOrders([0], 50, "never").next()[0], np.arange(50))


def test_masked_partial_batch_is_exactly_the_smaller_batch():
    x, y = tiny_problem()
    model = mlp((3,), 3, (5,))
    params, _ = model.init(jax.random.PRNGKey(0))
    rows = jnp.array([2, 7, 11, 0, 0, 0])  # 3 real rows padded to a batch of 6
    mask = jnp.array([1.0, 1, 1, 0, 0, 0])
    loss_sum, _, grad_sum, *_ = batch_gradient(model, params, {}, (jnp.asarray(x), jnp.asarray(y)),
                                                 Batch(rows, mask), None, None)
    mean_grad = jax.tree.map(lambda g: g / 3, grad_sum)
    expected = jax.grad(plain_mean_loss, argnums=1)(model, params, x[[2, 7, 11]], y[[2, 7, 11]])
    for got, want in zip(jax.tree.leaves(mean_grad), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss_sum / 3, plain_mean_loss(model, params, x[[2, 7, 11]], y[[2, 7, 11]]), rtol=1e-6)


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_gradient_accumulation_gives_the_full_batch_gradient(micro):
    x, y = tiny_problem()
    model = mlp((3,), 3, (5,))
    params, _ = model.init(jax.random.PRNGKey(1))
    batch = Batch(jnp.arange(9), jnp.ones(9))
    data = (jnp.asarray(x), jnp.asarray(y))
    full = batch_gradient(model, params, {}, data, batch, None, None)
    acc = batch_gradient(model, params, {}, data, batch, jax.random.PRNGKey(0), micro)
    np.testing.assert_allclose(full[0], acc[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(full[2]), jax.tree.leaves(acc[2])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sgd_momentum_steps_match_a_hand_written_update():
    x, y = tiny_problem()
    model = mlp((3,), 3, (4,))
    params, _ = model.init(jax.random.PRNGKey(2))
    lr, m = 0.1, 0.9
    opt = OptimizerConfig("sgd", lr, m)
    run = RunState(params, {}, make_optimizer(opt).init(params), jnp.float32(lr), jnp.float32(m), jnp.int32(0),
                   jnp.int32(-1), jax.random.PRNGKey(0))
    theta = jax.tree.map(np.asarray, params)
    velocity = jax.tree.map(np.zeros_like, theta)
    for rows in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]):
        batch = Batch(jnp.asarray(rows), jnp.ones(4))
        run, out = train_step(run, batch, 1, model=model, optimizer=opt, data=(jnp.asarray(x), jnp.asarray(y)),
                              reduction="mean", micro_batch=None)
        g = jax.grad(plain_mean_loss, argnums=1)(model, theta, x[rows], y[rows])
        velocity = jax.tree.map(lambda v, gi: m * v + np.asarray(gi), velocity, g)  # PyTorch/optax form
        theta = jax.tree.map(lambda t, v: t - lr * v, theta, velocity)
    for got, want in zip(jax.tree.leaves(run.params), jax.tree.leaves(theta)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(run.step) == 3 and int(run.diverged_step) == -1


def test_sum_reduction_scales_the_update_by_batch_size():
    x, y = tiny_problem()
    mean = batchlab.train((x, y, x, y), "logreg", batch_size=13, epochs=1, lr=0.1, reduction="mean")
    total = batchlab.train((x, y, x, y), "logreg", batch_size=13, epochs=1, lr=0.1 / 13, reduction="sum")
    np.testing.assert_allclose(mean.runs[0].params["w"], total.runs[0].params["w"], rtol=1e-5, atol=1e-7)


def test_cohort_equals_runs_one_by_one_and_is_reproducible():
    kwargs = dict(batch_size=16, epochs=3, momentum=0.9, hidden=(8,))
    together = batchlab.train("blobs", "mlp", lr="0.01,0.05", seeds=2, **kwargs)
    for res in together.runs:
        alone = batchlab.train("blobs", "mlp", lr=res.config.optimizer.lr, seeds=[res.config.seed], **kwargs).runs[0]
        assert alone.run_id == res.run_id
        for key in ("train_loss", "test_acc", "train_loss_running"):
            np.testing.assert_allclose(alone.history[key], res.history[key], rtol=1e-4, atol=1e-6)
        # float32: a vmapped matmul may sum in another order, so allow rounding-level differences
        np.testing.assert_allclose(alone.steps["mb_loss"], res.steps["mb_loss"], rtol=1e-4, atol=1e-6)
    again = batchlab.train("blobs", "mlp", lr="0.01,0.05", seeds=2, **kwargs)
    for a, b in zip(together.runs, again.runs):
        for key in a.history:
            if key != "wall_time":
                np.testing.assert_array_equal(a.history[key], b.history[key])
        np.testing.assert_array_equal(a.steps["mb_loss"], b.steps["mb_loss"])


def test_records_count_epochs_steps_and_samples():
    res = batchlab.train("blobs", "mlp", batch_size=450, epochs=3, lr=0.01, hidden=(4,)).runs[0]
    h, s = res.history, res.steps
    assert h["epoch"].tolist() == [0, 1, 2, 3]  # epoch 0 recorded before any update
    assert h["step"].tolist() == [0, 2, 4, 6]
    assert h["samples_seen"].tolist() == [0, 500, 1000, 1500]
    assert s["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert s["samples_seen"].tolist() == [450, 500, 950, 1000, 1450, 1500]
    assert s["epoch"].tolist() == [1, 1, 2, 2, 3, 3]
    assert np.all(np.diff(h["wall_time"]) >= 0) and np.all(np.diff(s["wall_time"]) >= 0)
    # The Keras-style running average weights each mini-batch by its real size.
    w = np.array([450, 50])
    np.testing.assert_allclose(h["train_loss_running"][1], (s["mb_loss"][:2] * w).sum() / 500, rtol=1e-6)
    dropped = batchlab.train("blobs", "mlp", batch_size=450, epochs=2, lr=0.01, hidden=(4,), drop_last=True).runs[0]
    assert dropped.history["step"].tolist() == [0, 1, 2] and dropped.history["samples_seen"][-1] == 900


def test_full_pass_metrics_match_an_independent_evaluation():
    res = batchlab.train("blobs", "mlp", batch_size=32, epochs=2, lr=0.01, hidden=(6,)).runs[0]
    from batchlab.data import load_dataset, resolve_data_config

    ds = load_dataset(resolve_data_config("blobs"))
    model = mlp(ds.sample_shape, ds.num_classes, (6,))
    logits, _ = model.apply(res.params, {}, ds.x_test)
    np.testing.assert_allclose(res.history["test_acc"][-1], np.mean(np.argmax(logits, 1) == ds.y_test), atol=1e-6)
    np.testing.assert_allclose(res.history["test_loss"][-1], plain_mean_loss(model, res.params, ds.x_test, ds.y_test),
                               rtol=1e-5)


def test_diverging_run_is_recorded_and_its_cohort_continues():
    out = batchlab.train("blobs", "mlp", batch_size=8, epochs=4, lr="0.01,1e6", momentum=0.9, hidden=(8,))
    ok, bad = out.runs
    assert bad.status == "diverged" and bad.diverged_step is not None and bad.diverged_step >= 1
    assert np.all(np.isfinite(bad.steps["mb_loss"]))  # only applied (finite) updates are recorded
    assert ok.status == "finished" and ok.history["epoch"][-1] == 4 and ok.history["test_acc"][-1] > 0.5


def test_early_stopping_stops_and_restores_the_best_epoch():
    es = EarlyStopping(monitor="test_acc", patience=2, restore_best=True)
    kwargs = dict(batch_size=500, lr=1e-5, hidden=(4,))
    res = batchlab.train("blobs", "mlp", epochs=60, early_stopping=es, **kwargs).runs[0]
    h = res.history
    assert res.status == "early_stopped"
    last = int(h["epoch"][-1])
    assert last < 60
    best = res.best_epoch
    assert last - best == 2  # stopped after `patience` epochs without improvement
    assert h["test_acc"][best] == max(h["test_acc"][1:])
    # The restored parameters are those a run stopped at the best epoch ends with (same seeds).
    assert best >= 1
    rerun = batchlab.train("blobs", "mlp", epochs=best, **kwargs).runs[0]
    for got, want in zip(jax.tree.leaves(res.params), jax.tree.leaves(rerun.params)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(jax.tree.leaves(res.params)[0],
                           jax.tree.leaves(batchlab.train("blobs", "mlp", epochs=last, **kwargs).runs[0].params)[0],
                           rtol=1e-6, atol=1e-7)  # the last epoch's would differ
    np.testing.assert_allclose(rerun.history["test_acc"][-1], h["test_acc"][best])


def hand_trajectory(update, x, y, batch_size: int, epochs: int) -> dict:
    """Logistic regression from zero, unshuffled batches, gradients by ``jax.grad``,
    parameters moved by ``update(theta, g, t, memory) -> (theta, memory)`` written in numpy."""
    model = logreg((x.shape[1],), int(y.max()) + 1)
    params, _ = model.init(None)
    theta = {k: np.asarray(v, np.float64) for k, v in params.items()}
    memory, t = None, 0
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            p32 = {k: jnp.asarray(v, jnp.float32) for k, v in theta.items()}
            g = {k: np.asarray(v, np.float64) for k, v in jax.grad(plain_mean_loss, argnums=1)(
                model, p32, x[rows], y[rows]).items()}
            t += 1
            theta, memory = update(theta, g, t, memory)
    return theta


def nesterov(lr, m):
    """PyTorch's SGD with Nesterov momentum: v = m v + g; theta -= lr (g + m v)."""
    def update(theta, g, t, v):
        v = {k: (m * v[k] if v else 0) + g[k] for k in g}
        return {k: theta[k] - lr * (g[k] + m * v[k]) for k in g}, v
    return update


def heavy_ball(lr, m):
    def update(theta, g, t, v):
        v = {k: (m * v[k] if v else 0) + g[k] for k in g}
        return {k: theta[k] - lr * v[k] for k in g}, v
    return update


def adam(lr, b1=0.9, b2=0.999, eps=1e-7):
    """Adam with bias correction, eps added to the corrected sqrt(v) (optax, PyTorch; Keras
    adds it to the uncorrected one). eps = 1e-7 is Keras' default, batchlab's too."""
    def update(theta, g, t, state):
        m, v = state or ({k: 0 for k in g}, {k: 0 for k in g})
        m = {k: b1 * m[k] + (1 - b1) * g[k] for k in g}
        v = {k: b2 * v[k] + (1 - b2) * g[k] ** 2 for k in g}
        step = {k: (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps) for k in g}
        return {k: theta[k] - lr * step[k] for k in g}, (m, v)
    return update


def test_nesterov_and_adam_follow_hand_written_updates():
    x, y = tiny_problem(n=14)
    common = dict(batch_size=4, epochs=3, shuffle="never")  # batches of 4, 4, 4, 2 rows
    cases = [(dict(lr=0.1, momentum=0.9, nesterov=True), nesterov(0.1, 0.9)),
             (dict(optimizer="adam", lr=0.05), adam(0.05))]
    for kwargs, update in cases:
        got = batchlab.train((x, y, x, y), "logreg", **common, **kwargs).runs[0].params
        want = hand_trajectory(update, x, y, 4, 3)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=str(kwargs))
    # The tolerance tells Nesterov from plain momentum (as if ``nesterov`` were ignored).
    plain = hand_trajectory(heavy_ball(0.1, 0.9), x, y, 4, 3)
    assert not np.allclose(plain["w"], hand_trajectory(nesterov(0.1, 0.9), x, y, 4, 3)["w"], rtol=1e-4, atol=1e-5)


def test_adam_epsilon_reaches_the_update():
    x, y = tiny_problem()
    model = mlp((3,), 3, (4,))
    params, _ = model.init(jax.random.PRNGKey(2))
    data = (jnp.asarray(x), jnp.asarray(y))
    theta = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    for eps in (0.05, 0.2):  # large enough to move the update visibly (the default 1e-7 would not)
        opt = OptimizerConfig("adam", 0.01, eps=eps)
        run = RunState(params, {}, make_optimizer(opt).init(params), jnp.float32(0.01), jnp.float32(0.0),
                       jnp.int32(0), jnp.int32(-1), jax.random.PRNGKey(0))
        want, state = theta, None
        for t, rows in enumerate(([0, 1, 2, 3], [4, 5, 6, 7]), start=1):
            run, _ = train_step(run, Batch(jnp.asarray(rows), jnp.ones(4)), t, model=model, optimizer=opt, data=data,
                                reduction="mean", micro_batch=None)
            p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), want)
            g = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.grad(plain_mean_loss, argnums=1)(
                model, p32, x[rows], y[rows]))
            flat_want, flat_g = jax.tree.leaves(want), jax.tree.leaves(g)
            moved, state = adam(0.01, eps=eps)(dict(enumerate(flat_want)), dict(enumerate(flat_g)), t, state)
            want = jax.tree.unflatten(jax.tree.structure(theta), [moved[i] for i in range(len(flat_want))])
        for got, expected in zip(jax.tree.leaves(run.params), jax.tree.leaves(want)):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_early_stopping_can_watch_a_running_average():
    rule = EarlyStopping("train_loss_running", patience=2, min_delta=0.05)
    result = batchlab.train("digits", "mlp", batch_size=64, epochs=30, lr=0.05, early_stopping=rule)
    run = result.runs[0]
    running = run.history["train_loss_running"]
    # Independently: the best value so far must improve by min_delta within `patience` epochs.
    best, best_epoch, stop = np.inf, 0, None
    for epoch in range(1, len(running)):
        if running[epoch] < best - rule.min_delta:
            best, best_epoch = running[epoch], epoch
        elif epoch - best_epoch >= rule.patience:
            stop = epoch
            break
    assert stop is not None and run.status == "early_stopped"
    assert run.history["epoch"][-1] == stop and run.best_epoch == best_epoch
