"""``batch_noise`` (``batchlab/monitor/per_sample.py``): against a brute-force loop of one backward
pass per row, for unbiasedness over many batches of a population whose ||G||^2 and tr(Sigma)
are known exactly, and against bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.monitor.per_sample import batch_noise  # noqa: E402


def brute_force(module, loss_fn, x, y, params=None):
    """Unbiased (||G||^2, tr(Sigma)) by hand: one backward pass per row, float64 NumPy."""
    chosen = [p for p in module.parameters() if p.requires_grad] if params is None else params
    rows = []
    for i in range(len(x)):
        module.zero_grad()
        loss_fn(module(x[i:i + 1]), y[i:i + 1]).backward()
        rows.append(np.concatenate([p.grad.detach().numpy().ravel() for p in chosen]).astype(np.float64))
    module.zero_grad()
    g = np.stack(rows)
    b = len(g)
    mean = g.mean(axis=0)
    trace = ((g - mean) ** 2).sum() / (b - 1)
    return mean @ mean - trace / b, trace


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)), (13, 6), 4


def cnn():
    """A CNN with batch norm in eval mode: its running statistics (not 0/1) must pass through unchanged."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 3, 3, stride=2), torch.nn.Flatten(), torch.nn.Linear(27, 3))
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval(), (11, 2, 8, 8), 3


@pytest.mark.parametrize("build", [mlp, cnn])
def test_matches_one_backward_per_row(build):
    net, shape, classes = build()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, classes, (shape[0],), generator=gen)
    grad_sq, trace = batch_noise(net, F.cross_entropy, x, y, chunk=4)  # 4 chunks, the last one short
    want_sq, want_trace = brute_force(net, F.cross_entropy, x, y)
    assert abs(want_sq) > 1e-3 * want_trace  # the correction -trace/B does not swamp ||gbar||^2
    np.testing.assert_allclose([float(grad_sq), float(trace)], [want_sq, want_trace], rtol=1e-5)


def test_params_subset_and_frozen_layers():
    net, shape, classes = mlp()
    x, y = torch.randn(shape), torch.randint(0, classes, (shape[0],))
    last = [net[2].bias, net[2].weight]  # not in named_parameters order: the statistics do not care
    got = batch_noise(net, F.cross_entropy, x, y, params=last, chunk=5)
    np.testing.assert_allclose([float(v) for v in got], brute_force(net, F.cross_entropy, x, y, last), rtol=1e-5)
    net[0].weight.requires_grad_(False)  # by default only what requires grad is differentiated
    got = batch_noise(net, F.cross_entropy, x, y)
    np.testing.assert_allclose([float(v) for v in got], brute_force(net, F.cross_entropy, x, y), rtol=1e-5)


def test_unbiased_over_batches_of_a_known_population():
    """Linear regression, MSE: g_i = 2 r_i [x_i, 1] with r_i the residual; the population's ||G||^2
    and tr(Sigma) come from all N rows' closed-form gradients. Batches of B drawn with replacement
    are iid, so the means of the estimates must be within 4 standard errors of the population
    values, and the uncorrected ||gbar||^2 and the 1/B trace must not be. (+-1 inputs and B = 8
    keep the trace's spread small enough that its 1/B bias, tr(Sigma)/B, is ~8 standard errors.)"""
    rng = np.random.default_rng(0)
    n, d, b, batches = 4096, 3, 8, 800
    x = rng.choice([-1.0, 1.0], size=(n, d)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.7 * rng.normal(size=n)).astype(np.float32)[:, None]
    net = torch.nn.Linear(d, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.8, -1.5, 0.9]]))
        net.bias.fill_(0.3)
    w, c = net.weight.detach().numpy().astype(np.float64)[0], float(net.bias.detach())
    r = x.astype(np.float64) @ w + c - y[:, 0]
    g = 2 * r[:, None] * np.hstack([x, np.ones((n, 1))])  # d/dw and d/db of (w.x + c - y)^2
    mean = g.mean(axis=0)
    pop_sq, pop_trace = mean @ mean, ((g - mean) ** 2).sum(axis=1).mean()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    est = np.array([[float(v) for v in batch_noise(net, F.mse_loss, xt[i], yt[i])]
                    for i in rng.integers(0, n, size=(batches, b))])

    def within(values, target):
        return abs(values.mean() - target) < 4 * values.std(ddof=1) / np.sqrt(len(values))

    assert pop_trace / b > pop_sq / 2  # noise comparable to the signal: the correction matters
    assert within(est[:, 0], pop_sq) and within(est[:, 1], pop_trace)
    assert not within(est[:, 0] + est[:, 1] / b, pop_sq)  # ||gbar||^2: biased up by tr(Sigma)/B
    assert not within(est[:, 1] * (b - 1) / b, pop_trace)  # sum / B: biased down by tr(Sigma)/B


def test_large_mean_small_spread():
    """The cancellation case: B ||G||^2 / tr(Sigma) ~ 1e8. Gradients -2 y_i of (0 - y_i)^2 with
    y_i = 1000 + k_i / 4 are exact in float32, so the brute force is exact; summing the squares
    (~2.6e8) in float32 would round them to multiples of 16, far more than the trace (~1)."""
    rng = np.random.default_rng(5)
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    x = torch.ones(64, 1)
    y = torch.from_numpy((1000 + rng.integers(-3, 4, size=(64, 1)) / 4).astype(np.float32))
    got = [float(v) for v in batch_noise(net, F.mse_loss, x, y, chunk=16)]
    want = brute_force(net, F.mse_loss, x, y)
    assert want[0] / want[1] > 1e6
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_dropout_leaves_the_loops_random_stream_alone():
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2))
    x, y = torch.randn(8, 5), torch.randint(0, 2, (8,))
    torch.manual_seed(4)
    grad_sq, trace = batch_noise(net.train(), F.cross_entropy, x, y)
    after = torch.rand(3)
    torch.manual_seed(4)
    assert torch.equal(after, torch.rand(3))
    eval_sq, eval_trace = batch_noise(net.eval(), F.cross_entropy, x, y)
    assert float(trace) != float(eval_trace)  # the masks were applied in train mode


def refusals():
    net, shape, classes = mlp()
    x, y = torch.randn(shape), torch.randint(0, classes, (shape[0],))
    bn = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4))
    no_stats = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.BatchNorm1d(4, track_running_stats=False)).eval()
    foreign = [torch.nn.Parameter(torch.zeros(3))]
    frozen = torch.nn.Linear(6, 4).requires_grad_(False)
    return {"batch norm in train mode": (lambda: batch_noise(bn.train(), F.cross_entropy, x, y), "batch statistics"),
            "batch norm without running stats": (lambda: batch_noise(no_stats, F.cross_entropy, x, y), "batch stat"),
            "one row": (lambda: batch_noise(net, F.cross_entropy, x[:1], y[:1]), "at least 2"),
            "foreign parameter": (lambda: batch_noise(net, F.cross_entropy, x, y, params=foreign), "not a parameter"),
            "lengths differ": (lambda: batch_noise(net, F.cross_entropy, x, y[:-1]), "rows but y has"),
            "nothing to differentiate": (lambda: batch_noise(frozen, F.cross_entropy, x, y), "no parameters")}


@pytest.mark.parametrize("case", list(refusals()))
def test_refusals_are_one_line(case):
    call, words = refusals()[case]
    with pytest.raises(BatchlabError, match=words) as info:
        call()
    assert "\n" not in str(info.value)
