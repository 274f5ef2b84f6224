"""LightningCallback: a short Lightning fit records what a plain loop, computed by hand in
float64 on the same initial weights and batches, gives."""

import copy
import os
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

sys.path.insert(0, os.path.dirname(__file__))
from monitor_reference import sq, two_batch_series  # noqa: E402

from batchlab.monitor import LightningCallback  # noqa: E402
from batchlab.store import Store  # noqa: E402

N, B, LR, MOMENTUM, STEPS = 48, 8, 0.1, 0.9, 6


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=MOMENTUM)


def data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(N, 4, generator=g), torch.randint(0, 3, (N,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=B, shuffle=False)


def fit(tmp_path, accumulate):
    torch.manual_seed(0)
    module = Tiny()
    start = copy.deepcopy(module.net.state_dict())
    callback = LightningCallback(tmp_path / "l.db", "tiny", warmup=0)
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=accumulate,
                         num_sanity_val_steps=0, callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging
        trainer.fit(module, data())
    with Store(tmp_path / "l.db") as store:
        (run,) = store.load()
    return run, start


def by_hand(start, accumulate):
    """The same updates in a plain loop: per update ||g||, ||step||, ||theta - theta_0|| and the
    squared norms of the first micro-batch's and the batch's mean gradients."""
    net = Tiny().net
    net.load_state_dict(start)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    theta0 = [p.detach().clone() for p in net.parameters()]
    out = {"grad_norm": [], "update_norm": [], "dist_init": [], "small": [], "big": []}
    batches = (batch for _ in range(accumulate) for batch in data())  # epochs in the same order
    for _ in range(STEPS):
        for i in range(accumulate):
            x, y = next(batches)
            (torch.nn.functional.cross_entropy(net(x), y) / accumulate).backward()
            if i == 0:
                out["small"].append(sq([p.grad * accumulate for p in net.parameters()]))
        grads = [p.grad.clone() for p in net.parameters()]
        before = [p.detach().clone() for p in net.parameters()]
        opt.step()
        opt.zero_grad()
        out["big"].append(sq(grads))
        out["grad_norm"].append(np.sqrt(sq(grads)))
        out["update_norm"].append(np.sqrt(sq([p - q for p, q in zip(net.parameters(), before)])))
        out["dist_init"].append(np.sqrt(sq([p - q for p, q in zip(net.parameters(), theta0)])))
    return out


def test_a_lightning_fit_records_the_plain_loop_numbers(tmp_path):
    run, start = fit(tmp_path, 1)
    expected = by_hand(start, 1)
    assert list(run.steps["step"]) == list(range(1, STEPS + 1))
    assert list(run.steps["samples_seen"]) == [B * t for t in range(1, STEPS + 1)]
    for name in ("grad_norm", "update_norm", "dist_init"):
        np.testing.assert_allclose(run.steps[name], expected[name], rtol=1e-5)
    assert run.config.optimizer.name == "sgd" and run.config.optimizer.lr == LR
    assert run.monitored.settings["warmup"] == 0


def test_lightning_accumulation_gives_the_two_batch_estimate(tmp_path):
    run, start = fit(tmp_path, 2)
    expected = by_hand(start, 2)
    np.testing.assert_allclose(run.steps["grad_norm"], expected["grad_norm"], rtol=1e-5)
    assert list(run.steps["samples_seen"]) == [2 * B * t for t in range(1, STEPS + 1)]
    noise = two_batch_series(expected["small"], [B] * STEPS, expected["big"], [2 * B] * STEPS)
    for name in ("noise_grad_sq", "noise_trace"):
        np.testing.assert_allclose(run.steps[name], noise[name], rtol=1e-4)
