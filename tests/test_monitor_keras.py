"""KerasCallback: a short Keras 3 fit records what the same updates, computed by hand (float64,
torch autograd on the same initial weights and batches, with SGD + momentum written out),
give; with Keras' gradient accumulation, each micro-batch's gradient by hand and the two-batch
noise estimate and its EMAs written out in NumPy. The JAX backend runs in this process (as the
other Keras tests, KERAS_BACKEND=jax is set before Keras is first imported); the torch backend in
one subprocess that runs this file (both of its fits)."""

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
from batchlab.instruments.step.noise_scale import DECAY  # noqa: E402
from batchlab.monitor import KerasCallback  # noqa: E402
from batchlab.store import Store  # noqa: E402

N, B, LR, MOMENTUM, EPOCHS = 40, 16, 0.1, 0.9, 2  # batches of 16, 16, 8: 6 updates
ROWS = [16, 16, 8] * EPOCHS
# gradient accumulation (n, batch_size, k, epochs): micro-batches of unequal rows inside some updates,
# updates across epochs, and on JAX a micro-batch left over at the end of the fit
JAX_ACCUMULATION = (72, 16, 2, 3)  # 15 micro-batches (16 x 4 + 8 a epoch): 7 updates of 32, 32, 24, 32, 24, 32, 32
TORCH_ACCUMULATION = (76, 8, 4, 2)  # 20 micro-batches (8 x 9 + 4 a epoch): 5 updates of 32, 32, 28, 32, 28
NOISE = ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale")


def data(n=N):
    rng = np.random.RandomState(1)
    return rng.randn(n, 5).astype("float32"), rng.randint(0, 3, n)


def tiny(k=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=MOMENTUM, gradient_accumulation_steps=k),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(db, accumulation=None, **kwargs):
    """A monitored fit (of ``accumulation`` = (n, batch_size, k, epochs) with accumulation); returns
    the initial weights, the callback and the model."""
    n, batch, k, epochs = accumulation or (N, B, None, EPOCHS)
    model = tiny(k)
    start = [np.array(w) for w in model.get_weights()]
    callback = KerasCallback(db, "tiny", warmup=0, **kwargs)
    x, y = data(n)
    model.optimizer.build(model.trainable_variables)
    slots = len(model.optimizer.variables)
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback])
    assert len(model.optimizer.variables) == slots  # the monitor's variables are taken out again
    return start, callback, model


def by_hand(start, k=1, n=N, batch=B, epochs=EPOCHS):
    """Per update ||g||, ||theta_{t+1} - theta_t||, ||theta_{t+1} - theta_0|| in float64: the
    model's forward pass written out, torch autograd, Keras' SGD with momentum (m = mu m - lr g).
    With k > 1, Keras' accumulation: every micro-batch's gradient separately, an update at every
    k-th (counted across epochs) with their mean, and the two-batch noise estimate's EMAs
    (:func:`noise_by_hand`); also each update's rows."""
    params = [torch.tensor(w, dtype=torch.float64, requires_grad=True) for w in start]
    theta0 = [p.detach().clone() for p in params]
    moments = [torch.zeros_like(p) for p in params]
    x, y = data(n)
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    out = {"grad_norm": [], "update_norm": [], "dist_init": [], "rows": []}
    micro = []  # (gradient, rows) of the micro-batches since the last update
    for _ in range(epochs):
        for i in range(0, n, batch):
            w1, b1, w2, b2 = params
            logits = torch.tanh(x[i:i + batch] @ w1 + b1) @ w2 + b2
            micro.append((torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y[i:i + batch]), params),
                          len(logits)))
            if len(micro) < k:
                continue
            grads = [sum(g[j] for g, _ in micro) / k for j in range(len(params))]
            with torch.no_grad():
                steps = []
                for p, m, g in zip(params, moments, grads):
                    m.mul_(MOMENTUM).sub_(LR * g)
                    p.add_(m)
                    steps.append(m.clone())
            out["grad_norm"].append(norm(grads))
            out["update_norm"].append(norm(steps))
            out["dist_init"].append(norm([p.detach() - q for p, q in zip(params, theta0)]))
            out["rows"].append(sum(b for _, b in micro))
            if k > 1:
                out.setdefault("micro", []).append([(norm(g) ** 2, b) for g, b in micro])
            micro = []
    if k > 1:
        out.update(noise_by_hand(out.pop("micro"), [g ** 2 for g in out["grad_norm"]], k))
    return out


def noise_by_hand(micro, big_sq, k):
    """The two-batch estimate of each update (small batches: its micro-batches, mean |g_j|^2 at
    B_s = k / sum 1/b_j; big: their mean, at k B_s), averaged by bias-corrected EMAs (decay DECAY),
    the standard error of the |G|^2 EMA and the withheld ratio, as noise_scale.py's docstring says."""
    ema, out = np.zeros(3), {name: [] for name in NOISE}
    for n, (parts, big) in enumerate(zip(micro, big_sq), start=1):
        small = np.mean([sq for sq, _ in parts])
        b_small = k / sum(1.0 / b for _, b in parts)
        b_big = k * b_small
        grad_sq = (b_big * big - b_small * small) / (b_big - b_small)
        trace = (small - big) / (1 / b_small - 1 / b_big)
        ema = DECAY * ema + (1 - DECAY) * np.array([grad_sq, trace, grad_sq ** 2])
        c = 1 - DECAY ** n
        f = (1 - DECAY) / (1 + DECAY) * (1 + DECAY ** n) / (1 - DECAY ** n)
        se = np.sqrt(f * (ema[2] / c - (ema[0] / c) ** 2) / (1 - f)) if n >= 2 else np.nan
        out["noise_grad_sq"].append(ema[0] / c)
        out["noise_trace"].append(ema[1] / c)
        out["noise_grad_sq_se"].append(se)
        out["noise_scale"].append(ema[1] / ema[0] if ema[0] / c > 2 * se else np.nan)
    return out


def norm(tensors):
    return float(np.sqrt(sum(float((t.detach().double() ** 2).sum()) for t in tensors)))


def check(steps, start, accumulation=None):
    n, batch, k, epochs = accumulation or (N, B, 1, EPOCHS)
    expected = by_hand(start, k, n, batch, epochs)
    rows = expected.pop("rows")
    assert accumulation is not None or rows == ROWS
    assert list(steps["step"]) == list(range(1, len(rows) + 1))
    assert list(steps["samples_seen"]) == list(np.cumsum(rows))
    assert all(name in steps for name in NOISE) == (k > 1)  # the default instruments: noise with micro-batches
    for name in expected:
        # the noise EMAs are differences of float32 squared norms; se a difference of two float32 EMAs
        rtol = 1e-3 if name == "noise_grad_sq_se" else 1e-4 if name in NOISE else 1e-5
        np.testing.assert_allclose(steps[name], expected[name], rtol=rtol, err_msg=name)


def check_accumulated(run, start, accumulation):
    check(run.steps, start, accumulation)
    n, batch, k, epochs = accumulation
    assert run.config.batch_size == k * batch  # the most common update's rows: the accumulated batch
    assert run.monitored.settings["gradient_accumulation_steps"] == k


@pytest.fixture(scope="module")
def torch_fits(tmp_path_factory):
    """The torch backend's two fits (plain, accumulated), in one process: their stores and initial weights."""
    folder = tmp_path_factory.mktemp("torch")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, __file__, str(folder / "t.db"), str(folder / "a.db")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    starts = json.loads(done.stdout.splitlines()[-1])
    return [(folder / db, [np.array(w, dtype=np.float32) for w in start])
            for db, start in zip(("t.db", "a.db"), starts)]


def load(db):
    with Store(db, create=False) as store:
        (run,) = store.load()
    return run


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
    expected.pop("rows")
    assert list(steps["step"]) == [2] and list(steps["samples_seen"]) == [32]  # update 2 of 3 measured
    for name in expected:
        np.testing.assert_allclose(steps[name], expected[name][1:2], rtol=1e-5, err_msg=name)


def test_a_keras_fit_on_torch_records_the_updates_by_hand(torch_fits):
    db, start = torch_fits[0]
    run = load(db)
    check(run.steps, start)
    assert run.config.optimizer.name == "sgd"


def test_gradient_accumulation_on_jax_records_each_update_and_the_noise_by_hand(tmp_path):
    start, _, model = fit(tmp_path / "a.db", JAX_ACCUMULATION)
    check_accumulated(load(tmp_path / "a.db"), start, JAX_ACCUMULATION)
    assert int(model.optimizer._iterations) == 15  # Keras saw every micro-batch (one is left in its accumulators)


def test_gradient_accumulation_on_torch_records_each_update_and_the_noise_by_hand(torch_fits):
    db, start = torch_fits[1]
    check_accumulated(load(db), start, TORCH_ACCUMULATION)


def test_bad_input_is_one_line(monkeypatch):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    callback = KerasCallback(None)
    callback.set_model(model)
    with pytest.raises(BatchlabError, match="compiled model") as excinfo:
        callback.on_train_begin()
    assert "\n" not in str(excinfo.value)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")
    callback = KerasCallback(None, instruments="noise_scale")  # without accumulation fit gives no split
    callback.set_model(model)
    with pytest.raises(BatchlabError, match="gradient_accumulation_steps") as excinfo:
        callback.on_train_begin()
    assert "\n" not in str(excinfo.value) and "apply" not in vars(model.optimizer)
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(BatchlabError, match="KERAS_BACKEND=jax") as excinfo:
        KerasCallback(None)
    assert "\n" not in str(excinfo.value)


if __name__ == "__main__":  # the torch backend's fits, in their own process: prints their initial weights
    starts = [fit(sys.argv[1])[0], fit(sys.argv[2], TORCH_ACCUMULATION)[0]]
    print(json.dumps([[w.tolist() for w in start] for start in starts]))
