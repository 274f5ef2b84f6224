"""AdamW, weight decay, Adam's beta1/beta2/eps, gradient clipping and the linear schedule, on
both backends: against an update written out in NumPy (float64) over 20 steps, against each
other on the same model and batches, and the torch backend against ``torch.optim``."""

import numpy as np
import pytest

import batchlab
from batchlab.errors import BatchlabError

torch = pytest.importorskip("torch")

N, FEATURES, CLASSES, STEPS = 24, 4, 3, 20


def problem():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, FEATURES)).astype(np.float32)
    y = (np.argmax(x[:, :CLASSES] + 0.3 * rng.normal(size=(N, CLASSES)), axis=1)).astype(np.int32)
    return x, y


def zero_linear(input_shape, num_classes):
    """Softmax regression in torch, at zero like the built-in ``logreg``."""
    layer = torch.nn.Linear(input_shape[0], num_classes)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    return layer


def gradient(theta, x, y):
    """Gradient of the mean softmax cross-entropy of softmax regression, by hand."""
    w, b = theta
    logits = x @ w + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return [x.T @ p / len(y), p.mean(axis=0)]


def numpy_trajectory(x, y, *, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, beta1=0.9, beta2=0.999,
                     eps=1e-7, clip_norm=None, schedule="constant", decay=0.0):
    """``STEPS`` full-batch updates from zero, each written out: clip, L2 (sgd, adam), the
    optimizer, decoupled decay (adamw), lr times the schedule's factor."""
    x, y = x.astype(np.float64), y
    theta = [np.zeros((FEATURES, CLASSES)), np.zeros(CLASSES)]
    velocity = [np.zeros_like(t) for t in theta]
    mu, nu = [np.zeros_like(t) for t in theta], [np.zeros_like(t) for t in theta]
    for t in range(1, STEPS + 1):
        g = gradient(theta, x, y)
        if clip_norm is not None:
            norm = np.sqrt(sum(np.sum(gi ** 2) for gi in g))
            g = [gi * (clip_norm / norm) if norm >= clip_norm else gi for gi in g]
        if optimizer != "adamw":
            g = [gi + weight_decay * th for gi, th in zip(g, theta)]
        if optimizer == "sgd":
            velocity = [momentum * v + gi for v, gi in zip(velocity, g)]
            direction = velocity
        else:
            mu = [beta1 * m + (1 - beta1) * gi for m, gi in zip(mu, g)]
            nu = [beta2 * v + (1 - beta2) * gi ** 2 for v, gi in zip(nu, g)]
            direction = [(m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps) for m, v in zip(mu, nu)]
            if optimizer == "adamw":
                direction = [d + weight_decay * th for d, th in zip(direction, theta)]
        factor = 1.0 if schedule == "constant" else decay + (1 - decay) * (1 - min((t - 1) / STEPS, 1.0))
        theta = [th - lr * factor * d for th, d in zip(theta, direction)]
    return theta


CASES = {
    "sgd L2": dict(lr=0.5, momentum=0.9, weight_decay=0.1),
    "adam L2 and betas": dict(optimizer="adam", lr=0.05, weight_decay=0.1, beta1=0.8, beta2=0.95, eps=1e-3),
    "adamw": dict(optimizer="adamw", lr=0.05, weight_decay=0.2),
    "adamw, own eps": dict(optimizer="adamw", lr=0.05, weight_decay=0.2, eps=0.05),
    "clipped sgd": dict(lr=0.5, momentum=0.5, clip_norm=0.3),
    "clipped adamw": dict(optimizer="adamw", lr=0.05, weight_decay=0.1, clip_norm=0.3),
    "linear decay": dict(lr=0.5, momentum=0.9, schedule="linear", decay=0.1),
}


def train(model, **settings):
    x, y = problem()
    return batchlab.train((x, y, x, y), model, batch_size="full", epochs=STEPS, shuffle="never", **settings).runs[0]


def as_numpy(run):
    params = run.params
    if "w" in params:
        return [np.asarray(params["w"]), np.asarray(params["b"])]
    return [np.asarray(params["weight"]).T, np.asarray(params["bias"])]


@pytest.mark.parametrize("model", ["logreg", zero_linear], ids=["jax", "torch"])
@pytest.mark.parametrize("case", CASES)
def test_each_backend_follows_the_update_written_out(model, case):
    settings = CASES[case]
    x, y = problem()
    want = numpy_trajectory(x, y, **settings)
    got = as_numpy(train(model, **settings))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=case)
    # The comparison can tell: without the setting that makes the case, the trajectory differs.
    plain = numpy_trajectory(x, y, **{k: v for k, v in settings.items()
                                      if k not in ("weight_decay", "clip_norm", "beta1", "beta2", "eps", "schedule")})
    assert max(np.abs(a - b).max() for a, b in zip(plain, want)) > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_jax_and_torch_backends_agree_on_the_same_batches(case):
    settings = dict(CASES[case], batch_size=8, seeds=2)  # mini-batches in each run's own shuffled order
    x, y = problem()
    runs = [batchlab.train((x, y, x, y), model, epochs=6, **settings).runs for model in ("logreg", zero_linear)]
    for jax_run, torch_run in zip(*runs):
        for key in ("train_loss", "test_acc"):
            np.testing.assert_allclose(torch_run.history[key], jax_run.history[key], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(torch_run.steps["mb_loss"], jax_run.steps["mb_loss"], rtol=1e-5, atol=1e-6)
        for a, b in zip(as_numpy(torch_run), as_numpy(jax_run)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_torch_backend_equals_torch_optim_adamw_and_clip_grad_norm():
    """What a PyTorch user writes: clip_grad_norm_ then AdamW. clip_grad_norm_ divides by
    ||g|| + 1e-6 (optax by ||g||), so the clipped case agrees to that."""
    x, y = problem()
    settings = dict(optimizer="adamw", lr=0.05, weight_decay=0.2, beta1=0.9, beta2=0.99, eps=1e-8, clip_norm=0.3)
    got = as_numpy(train(zero_linear, **settings))
    module = zero_linear((FEATURES,), CLASSES)
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.3)
        optimizer.step()
    want = [module.weight.detach().numpy().T, module.bias.detach().numpy()]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_optimizers_and_weight_decays_are_grid_axes():
    x, y = problem()
    result = batchlab.train((x, y, x, y), "logreg", batch_size=8, epochs=1, lr=0.05, momentum="0,0.9",
                            optimizer="sgd,adamw", weight_decay="0,0.01")
    settings = {(r.config.optimizer.name, r.config.optimizer.momentum, r.config.optimizer.weight_decay)
                for r in result.runs}
    # momentum applies to sgd only: adamw's runs do not split on it
    assert settings == {("sgd", 0.0, 0.0), ("sgd", 0.9, 0.0), ("sgd", 0.0, 0.01), ("sgd", 0.9, 0.01),
                        ("adamw", 0.0, 0.0), ("adamw", 0.0, 0.01)}
    assert len(result.runs) == 6
    default = batchlab.train((x, y, x, y), "logreg", batch_size=8, epochs=1, optimizer="adamw").runs[0]
    assert default.config.optimizer.weight_decay == 0.01  # PyTorch's AdamW default


@pytest.mark.parametrize("settings, message", [
    (dict(beta1=0.8), "beta1 applies to adam and adamw"),
    (dict(optimizer="adamw", momentum=0.9), "momentum applies to sgd only"),
    (dict(optimizer="adam", nesterov=True), "nesterov applies to sgd only"),
    (dict(clip_norm=0), "clip norm must be > 0"),
    (dict(weight_decay=-0.1), "weight decay must be >= 0"),
])
def test_settings_that_do_not_apply_are_refused(settings, message):
    with pytest.raises(BatchlabError, match=message):
        batchlab.train("blobs", batch_size=50, epochs=1, **settings)
