"""Models from other frameworks (Flax linen and NNX, Equinox, Keras 3) through batchlab.

Each adapter is checked against its framework's own training loop (optax for Flax and Equinox,
``model.train_on_batch`` for Keras): the same initial weights and batch order give the same
per-step losses for 20 steps, and the same evaluation loss afterwards (batch-norm statistics
carried by the engine as model state). Train vs eval mode, dropout keys and per-seed
re-initialization are checked on their own, and the same MLP written in each framework, loaded
with the built-in ``mlp``'s weights, gives the built-in's per-sample gradient statistics.
"""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported anywhere in this process

import equinox as eqx  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from batchlab.api import prepare, run_configs  # noqa: E402
from batchlab.runtime import configure_cache  # noqa: E402
from batchlab.engine.epoch import EpochOrders  # noqa: E402
from batchlab.engine.rowkey import row_key  # noqa: E402
from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.instruments import gradients  # noqa: E402
from batchlab.models.adapters import adapt, framework_of  # noqa: E402
from batchlab.models.mlp import mlp  # noqa: E402

N, N_TEST, B, EPOCHS, LR, HIDDEN, CLASSES = 160, 40, 16, 2, 0.1, 16, 10  # 2 epochs x 10 steps = 20 updates
configure_cache()  # the frameworks' eager initializers compile one op per draw: keep them for the next process


@pytest.fixture(scope="module")
def data():
    digits = load_digits()
    x, y = (digits.data / 16).astype(np.float32), digits.target.astype(np.int32)
    return x[:N], y[:N], x[N:N + N_TEST], y[N:N + N_TEST]


def ce(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def batches(n=N):
    """batchlab's batch order for data seed 0: each epoch's permutation, cut into consecutive B rows."""
    orders = EpochOrders([0], n, "every-epoch")
    for _ in range(EPOCHS):
        order = orders.next()[0]
        for s in range(n // B):
            yield order[s * B:(s + 1) * B]


def through_batchlab(model, data):
    """(per-step losses, final test loss, initial parameters) of one run: ``batchlab.train``'s own
    path (``prepare`` then ``run_configs``), keeping the parameters before the first update."""
    configs, dataset, net = prepare(data, model, batch_size=B, epochs=EPOCHS, lr=LR, seeds=1, hidden=(50,),
                                    activation="relu", init="he_uniform", dropout=0.0, standardize=False,
                                    test_fraction=0.2, label="label")
    run = run_configs(configs, dataset, net, checkpoints=(0,)).runs[0]
    assert run.status == "finished"
    return np.asarray(run.steps["mb_loss"]), float(run.history["test_loss"][-1]), run.checkpoints[0]


def assert_same_losses(ours, theirs, ours_test, theirs_test):
    assert len(ours) == len(theirs) == 20
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours_test, theirs_test, rtol=1e-5, atol=1e-6)
    assert ours[-1] < ours[0]  # it learns: a run that does nothing would match a loop that does nothing


# --- the same small net (Dense 16 -> BatchNorm -> relu -> Dense 10) in each framework ---------

class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(HIDDEN)(x))
        return nn.Dense(CLASSES)(nn.relu(x))


class NNXNet(nnx.Module):
    def __init__(self, features: int, classes: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(features, HIDDEN, rngs=rngs)
        self.norm = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
        self.out = nnx.Linear(HIDDEN, classes, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.norm(self.hidden(x))))


def make_nnx(input_shape, num_classes, rngs):
    return NNXNet(input_shape[0], num_classes, rngs=rngs)


class EqxNet(eqx.Module):
    hidden: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    out: eqx.nn.Linear

    def __init__(self, features, classes, key):
        k1, k2 = jax.random.split(key)
        self.hidden = eqx.nn.Linear(features, HIDDEN, key=k1)
        self.norm = eqx.nn.BatchNorm(HIDDEN, "batch", momentum=0.9, mode="ema")
        self.out = eqx.nn.Linear(HIDDEN, classes, key=k2)

    def __call__(self, x, state):
        h, state = self.norm(self.hidden(x), state)
        return self.out(jax.nn.relu(h)), state


def make_eqx(input_shape, num_classes, key):
    return eqx.nn.make_with_state(EqxNet)(input_shape[0], num_classes, key)


def make_keras(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(HIDDEN),
                             keras.layers.BatchNormalization(momentum=0.9), keras.layers.Activation("relu"),
                             keras.layers.Dense(num_classes)])


# --- each framework's own training loop --------------------------------------------------------

def test_flax_linen_matches_an_optax_loop(data):
    module = LinenNet()
    losses, test_loss, params = through_batchlab(module, data)
    x, y, x_test, y_test = map(jnp.asarray, data)
    stats = module.init(jax.random.PRNGKey(1), x[:1])["batch_stats"]  # batch norm starts at mean 0, var 1
    tx = optax.sgd(LR)
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, xb, yb):
        def loss_fn(p):
            out, new = module.apply({"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"])
            return ce(out, yb), new["batch_stats"]
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), stats, opt, loss

    theirs = []
    for index in batches():
        params, stats, opt, loss = step(params, stats, opt, x[index], y[index])
        theirs.append(float(loss))
    their_test = float(ce(module.apply({"params": params, "batch_stats": stats}, x_test, train=False), y_test))
    assert_same_losses(losses, theirs, test_loss, their_test)


def test_flax_nnx_matches_an_nnx_optimizer_loop(data):
    losses, test_loss, params = through_batchlab(make_nnx, data)
    x, y, x_test, y_test = map(jnp.asarray, data)
    model = make_nnx((64,), CLASSES, rngs=nnx.Rngs(1))
    weights = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(weights, params)
    nnx.update(model, weights)
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xb, yb):
        loss, grads = nnx.value_and_grad(lambda m: ce(m(xb), yb))(model)
        optimizer.update(model, grads)
        return loss

    model.train()
    theirs = [float(step(model, optimizer, x[index], y[index])) for index in batches()]
    model.eval()
    assert_same_losses(losses, theirs, test_loss, float(ce(model(x_test), y_test)))


def test_equinox_matches_an_optax_loop(data):
    losses, test_loss, params = through_batchlab(make_eqx, data)
    x, y, x_test, y_test = map(jnp.asarray, data)
    model, state = make_eqx((64,), CLASSES, jax.random.PRNGKey(1))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(eqx.filter(model, eqx.is_inexact_array))
    weights = jax.tree.unflatten(treedef, [params[jax.tree_util.keystr(path)] for path, _ in leaves])
    model = eqx.combine(weights, model)
    tx = optax.sgd(LR)
    opt = tx.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, state, opt, xb, yb):
        def loss_fn(m):
            out, new = jax.vmap(m, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(xb, state)
            return ce(out, yb), new
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model)
        updates, opt = tx.update(grads, opt, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, opt, loss

    theirs = []
    for index in batches():
        model, state, opt, loss = step(model, state, opt, x[index], y[index])
        theirs.append(float(loss))
    frozen = eqx.nn.inference_mode(model)
    out, _ = jax.vmap(frozen, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(x_test, state)
    assert_same_losses(losses, theirs, test_loss, float(ce(out, y_test)))


def test_keras_matches_train_on_batch_from_the_seeded_build(data):
    """Init seed 0 builds the model as ``keras.utils.set_random_seed(0); make_model()``: the
    reference builds it that way itself, so the initial weights are checked too."""
    losses, test_loss, params = through_batchlab(make_keras, data)
    x, y, x_test, y_test = data
    keras.utils.set_random_seed(0)
    model = make_keras((64,), CLASSES)
    for variable, value in zip(model.trainable_variables, params):
        np.testing.assert_array_equal(np.asarray(variable.value), value)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    theirs = [float(model.train_on_batch(x[index], y[index])) for index in batches()]
    their_test = float(ce(model(x_test, training=False), y_test))
    assert_same_losses(losses, theirs, test_loss, their_test)


# --- train vs eval mode, dropout keys, re-initialization per seed --------------------------------

class LinenDrop(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(32)(x)))
        return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(h))


class NNXDrop(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden, self.out = nnx.Linear(8, 32, rngs=rngs), nnx.Linear(32, 3, rngs=rngs)
        self.drop1, self.drop2 = nnx.Dropout(0.5, rngs=rngs), nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop2(self.drop1(nnx.relu(self.hidden(x)))))


class EqxDrop(eqx.Module):
    hidden: eqx.nn.Linear
    out: eqx.nn.Linear
    drop: eqx.nn.Dropout

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.hidden, self.out = eqx.nn.Linear(8, 32, key=k1), eqx.nn.Linear(32, 3, key=k2)
        self.drop = eqx.nn.Dropout(0.5)

    def __call__(self, x, *, key=None):
        return self.out(self.drop(jax.nn.relu(self.hidden(x)), key=key))


def keras_drop():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dropout(0.5), keras.layers.Dense(3)])


DROPOUT_MODELS = {"linen": LinenDrop, "nnx": lambda rngs: NNXDrop(rngs), "equinox": lambda key: EqxDrop(key),
                  "keras": keras_drop}


@pytest.mark.parametrize("kind", list(DROPOUT_MODELS))
def test_dropout_in_training_only_driven_by_the_key(kind):
    obj = DROPOUT_MODELS[kind]
    net = adapt(obj() if kind == "linen" else obj, (8,), 3)
    x = jax.random.normal(jax.random.PRNGKey(5), (16, 8))
    params, state = net.init(jax.random.PRNGKey(0))
    eval_a, _ = net.apply(params, state, x, train=False, key=None)
    eval_b, _ = net.apply(params, state, x, train=False, key=row_key(jnp.array([0, 9], jnp.uint32), 0))
    np.testing.assert_array_equal(eval_a, eval_b)  # evaluation: no dropout, whatever the key
    k1, k2 = (row_key(jnp.array([0, s], jnp.uint32), 0) for s in (1, 2))
    train_1, _ = net.apply(params, state, x, train=True, key=k1)
    again, _ = net.apply(params, state, x, train=True, key=k1)
    train_2, _ = net.apply(params, state, x, train=True, key=k2)
    np.testing.assert_array_equal(train_1, again)
    assert not np.allclose(train_1, eval_a) and not np.allclose(train_1, train_2)
    if kind != "keras":  # Keras draws one mask for the whole batch: not split-invariant (documented)
        part, _ = net.apply(params, state, x[4:12], train=True, key=row_key(jnp.array([0, 1], jnp.uint32), 4))
        np.testing.assert_allclose(part, train_1[4:12], rtol=1e-6, atol=1e-6)


def test_batch_norm_state_is_updated_in_training_and_used_in_evaluation():
    x = jax.random.normal(jax.random.PRNGKey(2), (32, 64)) * 3 + 1
    for obj in (LinenNet(), make_nnx, make_eqx, make_keras):
        net = adapt(obj, (64,), CLASSES)
        params, state = net.init(jax.random.PRNGKey(0))
        before, _ = net.apply(params, state, x, train=False, key=None)
        _, same = net.apply(params, state, x, train=False, key=None)
        _, moved = net.apply(params, state, x, train=True, key=None)
        for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(state)):
            np.testing.assert_array_equal(a, b)  # evaluation leaves the statistics alone
        assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(state))), obj
        after, _ = net.apply(params, moved, x, train=False, key=None)
        assert not np.allclose(before, after), obj  # evaluation reads the running statistics


def test_factories_reinitialize_per_seed_and_instances_keep_their_weights():
    for obj in (LinenNet(), make_nnx, make_eqx, make_keras):
        net = adapt(obj, (64,), CLASSES)
        a, b, a_again = (jax.tree.leaves(net.init(jax.random.PRNGKey(s))[0]) for s in (0, 1, 0))
        assert all(np.array_equal(u, v) for u, v in zip(a, a_again))
        assert any(not np.array_equal(u, v) for u, v in zip(a, b)), obj
        with jax.threefry_partitionable(False):  # as the engine does: compiled, vmapped over runs
            stacked = jax.jit(jax.vmap(net.init))(jnp.stack([jax.random.PRNGKey(s) for s in (0, 1)]))
        assert any(not np.array_equal(u[0], u[1]) for u in jax.tree.leaves(stacked[0])), obj
    built = (make_nnx((64,), CLASSES, nnx.Rngs(3)), make_eqx((64,), CLASSES, jax.random.PRNGKey(3)),
             make_keras((64,), CLASSES))
    for obj in built:
        with pytest.warns(UserWarning, match="own weights"):
            net = adapt(obj, (64,), CLASSES)
        a, b = (jax.tree.leaves(net.init(jax.random.PRNGKey(s))[0]) for s in (0, 1))
        assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_frameworks_are_told_apart_without_importing_others():
    assert framework_of(LinenNet()) == "linen" and framework_of(make_nnx((4,), 2, nnx.Rngs(0))) == "nnx"
    assert framework_of(make_eqx((4,), 2, jax.random.PRNGKey(0))) == "equinox"
    assert framework_of(keras_drop()) == "keras" and framework_of(make_keras) is None
    assert framework_of(mlp((4,), 2)) == "batchlab" and framework_of(object()) is None


@pytest.mark.parametrize("factory, message", [
    (lambda: 3, "returned int, not a model"),
    (lambda input_shape, num_classes: LinenNet(), None),  # fine: 10 outputs
    (lambda input_shape, num_classes, bogus, extra: LinenNet(), "cannot tell what to pass"),
    (lambda: (_ for _ in ()).throw(RuntimeError("boom")), "raised RuntimeError: boom"),
])
def test_factory_errors_are_one_line(factory, message):
    if message is None:
        adapt(factory, (64,), CLASSES)
        return
    with pytest.raises(BatchlabError, match=message) as info:
        adapt(factory, (64,), CLASSES)
    assert "\n" not in str(info.value)


def test_adapting_imports_only_the_model_s_own_framework():
    code = ("import sys, jax, equinox as eqx\n"
            "from batchlab.models.adapters import adapt\n"
            "from batchlab.models.mlp import mlp\n"
            "adapt(mlp((4,), 3), (4,), 3)\n"
            "adapt(lambda key: eqx.nn.MLP(4, 3, 8, 1, key=key), (4,), 3)\n"
            "print(sorted(m for m in ('flax', 'keras', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_missing_framework_is_one_line_with_its_install_hint(monkeypatch):
    import batchlab.models.adapters as adapters

    def no_flax(name, *args):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(adapters.importlib, "import_module", no_flax)
    with pytest.raises(BatchlabError, match=r"needs flax, which is not installed .*pip install 'batchlab\[flax\]'"):
        adapt(LinenNet(), (64,), CLASSES)


def test_keras_on_another_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(BatchlabError, match="KERAS_BACKEND=jax"):
        adapt(make_keras, (64,), CLASSES)


# --- per-sample gradient statistics against the built-in mlp -----------------------------------

class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        hidden = nn.Dense(HIDDEN)(x)  # created first: Dense_0
        return nn.Dense(CLASSES)(nn.relu(hidden))


class NNXMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden, self.out = nnx.Linear(64, HIDDEN, rngs=rngs), nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


class EqxMLP(eqx.Module):
    hidden: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.hidden, self.out = eqx.nn.Linear(64, HIDDEN, key=k1), eqx.nn.Linear(HIDDEN, CLASSES, key=k2)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def keras_mlp():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(HIDDEN, activation="relu"),
                             keras.layers.Dense(CLASSES)])


def test_the_same_mlp_in_every_framework_has_the_builtin_gradient_statistics(data):
    x, y = jnp.asarray(data[0][:64]), jnp.asarray(data[1][:64])
    builtin = mlp((64,), CLASSES, (HIDDEN,))
    (first, second), _ = builtin.init(jax.random.PRNGKey(7))
    dense = lambda layer: {"kernel": layer["w"], "bias": layer["b"]}  # noqa: E731
    weights = {
        "linen": (LinenMLP(), {"Dense_0": dense(first), "Dense_1": dense(second)}),
        "nnx": (lambda rngs: NNXMLP(rngs), {"hidden": dense(first), "out": dense(second)}),
        "equinox": (lambda key: EqxMLP(key), {".hidden.weight": first["w"].T, ".hidden.bias": first["b"],
                                              ".out.weight": second["w"].T, ".out.bias": second["b"]}),
        "keras": (keras_mlp, [first["w"], first["b"], second["w"], second["b"]]),
    }
    expected = gradients.statistics_from_gram(gradients.gram_matrix(builtin, [first, second], {}, x, y))
    assert expected["grad_sq"] > 0 and expected["trace"] > 0
    for kind, (obj, params) in weights.items():
        net = adapt(obj, (64,), CLASSES)
        own, _ = net.init(jax.random.PRNGKey(0))
        assert jax.tree.structure(own) == jax.tree.structure(params), kind
        stats = gradients.statistics_from_gram(gradients.gram_matrix(net, params, {}, x, y))
        for key in ("grad_sq", "trace"):
            np.testing.assert_allclose(stats[key], expected[key], rtol=2e-6, err_msg=f"{kind} {key}")
