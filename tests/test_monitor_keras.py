"""KerasCallback: a short Keras 3 fit records what the same updates, computed by hand (float64,
torch autograd on the same initial weights and batches, with SGD + momentum written out),
give. The JAX backend runs in this process (as the other Keras tests, KERAS_BACKEND=jax is set
before Keras is first imported); the torch backend in a subprocess that runs this file."""

import json
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.monitor import KerasCallback  # noqa: E402
from batchlab.store import Store  # noqa: E402

N, B, LR, MOMENTUM, EPOCHS = 40, 16, 0.1, 0.9, 2  # batches of 16, 16, 8: 6 updates
ROWS = [16, 16, 8] * EPOCHS


def data():
    rng = np.random.RandomState(1)
    return rng.randn(N, 5).astype("float32"), rng.randint(0, 3, N)


def tiny():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(db, **kwargs):
    """A monitored fit; returns the initial weights and the callback."""
    model = tiny()
    start = [np.array(w) for w in model.get_weights()]
    callback = KerasCallback(db, "tiny", warmup=0, **kwargs)
    x, y = data()
    model.optimizer.build(model.trainable_variables)
    slots = len(model.optimizer.variables)
    model.fit(x, y, batch_size=B, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[callback])
    assert len(model.optimizer.variables) == slots  # the monitor's variables are taken out again
    return start, callback, model


def by_hand(start):
    """Per update ||g||, ||theta_{t+1} - theta_t||, ||theta_{t+1} - theta_0|| in float64: the
    model's forward pass written out, torch autograd, Keras' SGD with momentum (m = mu m - lr g)."""
    params = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in start]
    theta0 = [p.detach().clone() for p in params]
    moments = [torch.zeros_like(p) for p in params]
    x, y = data()
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    out = {"grad_norm": [], "update_norm": [], "dist_init": []}
    for _ in range(EPOCHS):
        for i in range(0, N, B):
            w1, b1, w2, b2 = params
            logits = torch.tanh(x[i:i + B] @ w1 + b1) @ w2 + b2
            grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y[i:i + B]), params)
            with torch.no_grad():
                steps = []
                for p, m, g in zip(params, moments, grads):
                    m.mul_(MOMENTUM).sub_(LR * g)
                    p.add_(m)
                    steps.append(m.clone())
            out["grad_norm"].append(norm(grads))
            out["update_norm"].append(norm(steps))
            out["dist_init"].append(norm([p.detach() - q for p, q in zip(params, theta0)]))
    return out


def norm(tensors):
    return float(np.sqrt(sum(float((t.detach().double() ** 2).sum()) for t in tensors)))


def check(steps, start):
    expected = by_hand(start)
    assert list(steps["step"]) == list(range(1, len(ROWS) + 1))
    assert list(steps["samples_seen"]) == list(np.cumsum(ROWS))
    for name in expected:
        np.testing.assert_allclose(steps[name], expected[name], rtol=1e-5, err_msg=name)


def test_a_keras_fit_on_jax_records_the_updates_by_hand(tmp_path):
    start, callback, model = fit(tmp_path / "k.db")
    with Store(tmp_path / "k.db", create=False) as store:
        (run,) = store.load()
    check(run.steps, start)
    assert run.status == "finished" and run.monitored.name == "tiny"
    assert run.config.optimizer.name == "sgd" and run.config.optimizer.lr == pytest.approx(LR)
    assert run.config.optimizer.momentum == pytest.approx(MOMENTUM) and run.config.batch_size == B
    assert run.monitored.settings["warmup"] == 0
    x, y = data()
    model.fit(x, y, batch_size=B, epochs=1, verbose=0)  # the model trains on without the callback


def test_keras_every_k_and_eager_jax():
    model = tiny()  # run_eagerly: the same wrapper, traced by nobody
    start = [np.array(w) for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=MOMENTUM), run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = KerasCallback(None, "eager", every=2)
    x, y = data()
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    steps, expected = callback.steps(), by_hand(start)
    assert list(steps["step"]) == [2] and list(steps["samples_seen"]) == [32]  # update 2 of 3 measured
    for name in expected:
        np.testing.assert_allclose(steps[name], expected[name][1:2], rtol=1e-5, err_msg=name)


def test_a_keras_fit_on_torch_records_the_updates_by_hand(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "t.db")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    start = [np.array(w, dtype=np.float32) for w in json.loads(done.stdout.splitlines()[-1])]
    with Store(tmp_path / "t.db", create=False) as store:
        (run,) = store.load()
    check(run.steps, start)
    assert run.config.optimizer.name == "sgd"


def test_bad_input_is_one_line(monkeypatch):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    callback = KerasCallback(None)
    callback.set_model(model)
    with pytest.raises(BatchlabError, match="compiled model") as excinfo:
        callback.on_train_begin()
    assert "\n" not in str(excinfo.value)
    model.compile(optimizer=keras.optimizers.SGD(LR, gradient_accumulation_steps=2), loss="mse")
    with pytest.raises(BatchlabError, match="gradient_accumulation_steps"):
        callback.on_train_begin()
    with pytest.raises(BatchlabError, match="noise_scale"):
        KerasCallback(None, instruments="noise_scale")
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(BatchlabError, match="KERAS_BACKEND=jax") as excinfo:
        KerasCallback(None)
    assert "\n" not in str(excinfo.value)


if __name__ == "__main__":  # the torch backend's fit, in its own process: prints the initial weights
    start, _, _ = fit(sys.argv[1])
    print(json.dumps([w.tolist() for w in start]))
