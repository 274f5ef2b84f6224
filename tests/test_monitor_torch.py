"""TorchMonitor in a plain PyTorch loop against batchlab's torch backend on the same model,
initial weights and batch order, against brute force, and against bad input."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from monitor_reference import sq, two_batch_series  # noqa: E402

from batchlab.config import DataConfig, ModelConfig  # noqa: E402
from batchlab.data import Dataset  # noqa: E402
from batchlab.engine.backends import train_cohort  # noqa: E402
from batchlab.engine.epoch import EpochOrders  # noqa: E402
from batchlab.errors import BatchlabError, StoreError  # noqa: E402
from batchlab.grid import build_configs  # noqa: E402
from batchlab.models.adapters.torch import adapt_torch  # noqa: E402
from batchlab.monitor import TorchMonitor  # noqa: E402
from batchlab.store import Store  # noqa: E402

N, N_TEST, FEATURES, CLASSES, WIDTH, B, LR, MOMENTUM = 203, 40, 5, 3, 16, 16, 0.05, 0.9  # last batch: 11 rows
NOISE = ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + N_TEST, FEATURES)).astype(np.float32)
    y = np.argmax(x[:, :CLASSES] + 0.5 * rng.normal(size=(len(x), CLASSES)), axis=1).astype(np.int32)
    return Dataset("tiny", x[:N], y[:N], x[N:], y[N:], CLASSES)


def factory(input_shape, num_classes):
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], WIDTH), torch.nn.Tanh(),
                               torch.nn.Linear(WIDTH, num_classes))


def through_backend(data, instruments, epochs=2):
    """batchlab's torch backend on the model: (per-step series, the model builder, the config)."""
    model = adapt_torch(factory, data.sample_shape, data.num_classes, "classification")
    (cfg,) = build_configs(DataConfig("tiny"), data.n_train, ModelConfig("custom:tiny", (), "", "", 0.0,
                                                                         fingerprint="t"),
                           batch_size=B, epochs=epochs, lr=LR, momentum=MOMENTUM, instruments=instruments)
    (run,) = train_cohort([cfg], data, model)
    assert run.status == "finished"
    return run.steps, model, cfg


def batches(data, cfg, epochs):
    """The backend's batch order: each epoch's permutation of data seed 0 cut into B rows."""
    orders = EpochOrders([cfg.data_seed], data.n_train, cfg.shuffle)
    for _ in range(epochs):
        order = torch.from_numpy(orders.next()[0].astype(np.int64))
        for start in range(0, data.n_train, B):
            yield order[start:start + B]


def user_loop(data, model, cfg, monitor_kwargs, epochs=2, halves=False, close=True):
    """A user's loop with torch.optim.SGD and the monitor; ``halves``: accumulate two
    micro-batches (alternate rows, each loss scaled by its share of the batch)."""
    module = model.build(cfg.init_seed)
    opt = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    mon = TorchMonitor(module, **monitor_kwargs)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    for rows in batches(data, cfg, epochs):
        xb, yb = x[rows], y[rows]
        if halves:
            for part in (slice(0, None, 2), slice(1, None, 2)):
                (F.cross_entropy(module(xb[part]), yb[part]) * len(yb[part]) / len(yb)).backward()
                mon.update(batch_size=len(yb[part]), micro_batch=True)
            mon.update()
        else:
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            mon.update(batch_size=len(yb), loss=loss)
        opt.step()
        opt.zero_grad()
    if close:
        mon.close()
    return mon, module


def test_a_plain_loop_records_the_torch_backend_s_numbers(data, tmp_path):
    instruments = ("grad_norm", "update_norm", "dist_init", "weight_norm")
    theirs, model, cfg = through_backend(data, instruments)
    mon, _ = user_loop(data, model, cfg, dict(db=tmp_path / "m.db", name="plain", instruments=instruments,
                                              settings=dict(lr=LR, momentum=MOMENTUM, batch_size=B)))
    ours = mon.steps()
    assert len(ours["step"]) == len(theirs["step"]) == 26
    np.testing.assert_array_equal(ours["step"], theirs["step"])
    np.testing.assert_array_equal(ours["samples_seen"], theirs["samples_seen"])
    for name in instruments + ("mb_loss",):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, err_msg=name)
    assert theirs["dist_init"][-1] > 5 * theirs["dist_init"][0]  # it moves: a loop doing nothing would not match
    with Store(tmp_path / "m.db", create=False) as store:  # the store holds what the monitor recorded
        (run,) = store.load()
    assert (run.kind, run.status, run.monitored.name, run.run_id) == ("monitored", "finished", "plain", mon.run_id)
    assert (run.config.batch_size, run.config.optimizer.lr, run.config.optimizer.momentum) == (B, LR, MOMENTUM)
    for name in instruments:
        np.testing.assert_array_equal(run.steps[name], ours[name])


def test_accumulated_halves_give_the_engine_s_two_batch_estimate(data):
    theirs, model, cfg = through_backend(data, ("grad_norm", "noise_scale"))
    mon, _ = user_loop(data, model, cfg, dict(db=None, instruments=("grad_norm", "noise_scale")), halves=True)
    ours = mon.steps()
    np.testing.assert_array_equal(ours["samples_seen"], theirs["samples_seen"])
    np.testing.assert_allclose(ours["grad_norm"], theirs["grad_norm"], rtol=1e-5)
    for name in NOISE:
        assert np.array_equal(np.isnan(ours[name]), np.isnan(theirs[name])), name
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, equal_nan=True, err_msg=name)
    assert np.isfinite(ours["noise_grad_sq"]).all() and np.isnan(ours["noise_grad_sq_se"][0])


def test_four_micro_batches_against_the_formula_on_separate_gradients(data):
    """k = 4 unequal micro-batches: the first against the batch, by brute force (separate
    autograd passes on a copy of the model, the EMAs and standard error from their formulas)."""
    torch.manual_seed(3)
    module = factory((FEATURES,), CLASSES)
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    mon = TorchMonitor(module, db=None)  # default instruments: noise_scale joins, micro-batches are there
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    sizes = (5, 4, 4, 3)  # 16 rows
    small, big, norms = [], [], []
    for step in range(6):
        xb, yb = x[16 * step:16 * step + 16], y[16 * step:16 * step + 16]
        first = torch.autograd.grad(F.cross_entropy(module(xb[:5]), yb[:5]), list(module.parameters()))
        whole = torch.autograd.grad(F.cross_entropy(module(xb), yb), list(module.parameters()))
        small.append(sq(first))
        big.append(sq(whole))
        norms.append(np.sqrt(sq(whole)))
        start = 0
        for size in sizes:
            part = slice(start, start + size)
            (F.cross_entropy(module(xb[part]), yb[part]) * size / 16).backward()
            mon.update(batch_size=size, micro_batch=True)
            start += size
        mon.update(batch_size=16)
        opt.step()
        opt.zero_grad()
    mon.close()
    ours = mon.steps()
    want = two_batch_series(small, [5] * 6, big, [16] * 6)
    np.testing.assert_allclose(ours["grad_norm"], norms, rtol=1e-5)
    for name in NOISE:
        np.testing.assert_allclose(ours[name], want[name], rtol=1e-4, equal_nan=True, err_msg=name)
    assert np.isfinite(ours["noise_grad_sq_se"][1:]).all()


def test_per_sample_every_k_records_the_exact_estimate_s_averages(data):
    """per_sample_every=2: at updates 2, 4, ... the per-sample estimate, averaged as noise_scale
    averages; by brute force (one autograd pass per row at theta_t, the EMAs from their formulas).
    The other updates record nothing of it, and the loop trains as without it."""
    torch.manual_seed(5)
    module = factory((FEATURES,), CLASSES)
    opt = torch.optim.SGD(module.parameters(), lr=0.2)
    mon = TorchMonitor(module, db=None, instruments="grad_norm", per_sample_every=2, loss_fn=F.cross_entropy)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    means, bars, norms = [], [], []
    for step in range(8):
        xb, yb = x[12 * step:12 * step + 12], y[12 * step:12 * step + 12]
        if step % 2 == 1:  # updates 2, 4, 6, 8
            rows = [torch.autograd.grad(F.cross_entropy(module(xb[i:i + 1]), yb[i:i + 1]), list(module.parameters()))
                    for i in range(12)]
            means.append(np.mean([sq(g) for g in rows]))
            bars.append(sq([sum(parts) / 12 for parts in zip(*rows)]))
        loss = F.cross_entropy(module(xb), yb)
        loss.backward()
        norms.append(np.sqrt(sq([p.grad for p in module.parameters()])))
        mon.update(batch_size=12, inputs=xb, targets=yb)
        opt.step()
        opt.zero_grad()
    mon.close()
    ours = mon.steps()
    np.testing.assert_allclose(ours["grad_norm"], norms, rtol=1e-5)  # the step's own gradient, untouched
    want = two_batch_series(means, [1] * 4, bars, [12] * 4)  # the single rows against the batch
    for name in NOISE:
        mine = ours[name.replace("noise_", "sample_") if name != "noise_scale" else "sample_noise_scale"]
        assert np.isnan(mine[0::2]).all(), name
        np.testing.assert_allclose(mine[1::2], want[name], rtol=1e-4, equal_nan=True, err_msg=name)
    assert np.isfinite(ours["sample_noise_scale"][5::2]).all()  # shown once the average is clearly > 0
    with pytest.raises(BatchlabError, match="needs inputs= and targets="):
        again = TorchMonitor(module, db=None, per_sample_every=1, loss_fn=F.cross_entropy)
        F.cross_entropy(module(x[:8]), y[:8]).backward()
        again.update(batch_size=8)


def test_every_k_measures_only_those_updates_with_the_same_values(data):
    every_one, model, cfg = through_backend(data, ("grad_norm", "update_norm"), epochs=1)
    mon, _ = user_loop(data, model, cfg, dict(db=None, instruments=("grad_norm", "update_norm"), every=4),
                       epochs=1)
    ours = mon.steps()
    np.testing.assert_array_equal(ours["step"], [4, 8, 12])
    for name in ("grad_norm", "update_norm"):
        np.testing.assert_allclose(ours[name], every_one[name][[3, 7, 11]], rtol=1e-5)


def test_a_crash_keeps_what_was_flushed(data, tmp_path):
    _, model, cfg = through_backend(data, ("grad_norm",), epochs=1)
    mon, _ = user_loop(data, model, cfg, dict(db=tmp_path / "m.db", name="crashed", flush_every=5), epochs=1,
                       close=False)  # 13 updates, never closed: as if the process died after them
    with Store(tmp_path / "m.db", create=False) as store:
        (run,) = store.load()
    # Flushes after updates 5 and 10; update 10 is measured at the next call, so 1..9 are stored.
    assert run.status == "running"
    np.testing.assert_array_equal(run.steps["step"], np.arange(1, 10))
    np.testing.assert_array_equal(run.steps["grad_norm"], mon.steps()["grad_norm"][:9])
    mon.close()
    with Store(tmp_path / "m.db", create=False) as store:
        (run,) = store.load()
    assert run.status == "finished" and len(run.steps["step"]) == 13


def test_default_writes_wait_while_they_took_over_two_percent_of_the_time(tmp_path):
    """flush_every=None: a write at least every 500 updates, but none while the writes so far
    took more than 2% of the run's time (a write rewrites the whole series: its cost grows)."""
    from batchlab.monitor.recorder import Recorder

    writes = []
    rec = Recorder(None, "r", lambda b: None, None, before_flush=lambda: writes.append(rec.unflushed))
    rec.started -= 100.0  # the run has taken 100 s
    for _ in range(1000):
        rec.count_update(8)
    assert len(writes) == 2  # cheap writes: at 500 and 1000
    rec.write_seconds = 2.5  # over 2% of 100 s
    for _ in range(1000):
        rec.count_update(8)
    assert len(writes) == 2
    rec.write_seconds = 1.5
    rec.count_update(8)
    assert len(writes) == 3  # due since long ago, now within the share
    exact = Recorder(None, "r", lambda b: None, 500, before_flush=lambda: writes.append(0))
    exact.write_seconds = 1e9  # a given flush_every writes every that many updates, whatever they cost
    for _ in range(500):
        exact.count_update(8)
    assert len(writes) == 4


def test_runs_export_and_report_read_a_store_with_monitored_and_trained_runs(data, tmp_path, cli):
    from batchlab.api import run_configs

    model = adapt_torch(factory, data.sample_shape, data.num_classes, "classification")
    cfgs = build_configs(DataConfig("tiny"), data.n_train, ModelConfig("custom:tiny", (), "", "", 0.0, fingerprint="t"),
                         batch_size=B, epochs=1, lr=LR)
    run_configs(cfgs, data, model, db=tmp_path / "both.db")
    mon, _ = user_loop(data, model, cfgs[0], dict(db=tmp_path / "both.db", name="mine", settings=dict(warmup=7)),
                       epochs=1)
    code, out, err = cli("runs", "--db", tmp_path / "both.db")
    assert code == 0 and "2 run(s)" in out and mon.run_id[:8] in out and "mine" in out, out + err
    assert max(map(len, out.splitlines())) <= 80
    code, out, err = cli("export", "--db", tmp_path / "both.db", "--out", tmp_path / "ex")
    assert code == 0, err
    import pandas as pd

    runs = pd.read_csv(tmp_path / "ex" / "runs.csv")
    mine = runs[runs.run_id == mon.run_id].iloc[0]
    assert (mine["kind"], mine["name"], mine["warmup"], mine["steps"]) == ("monitored", "mine", 7, 13)
    steps = pd.read_csv(tmp_path / "ex" / "steps.csv")
    np.testing.assert_allclose(steps[steps.run_id == mon.run_id].grad_norm, mon.steps()["grad_norm"])
    code, out, err = cli("report", "--db", tmp_path / "both.db", "--out", tmp_path / "rep")
    assert code == 0 and "warning" not in err, err
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "measured in their own training loop" in page and mon.run_id[:8] in page
    assert "groups of training runs" not in page or "1 group of training runs (1 run)" in page


def test_an_older_batchlab_skips_a_monitored_run_instead_of_calling_it_damaged():
    """What a batchlab without monitored runs does with one: its config has settings it does
    not know (kind, monitor), so the run is 'newer', skipped with a note, never damage."""
    import json

    from batchlab.config import run_config_from_dict
    from batchlab.store.records import config_record
    from batchlab.store.versions import Newer, stored_config

    module = factory((FEATURES,), CLASSES)
    mon = TorchMonitor(module, db=None, name="n", lr=0.1)
    (F.cross_entropy(module(torch.ones(2, FEATURES)), torch.tensor([0, 1]))).backward()
    mon.update(batch_size=2)
    mon.close()
    record = json.loads(json.dumps(config_record(mon.recorder.result("finished"))))
    unknown = []
    run_config_from_dict(record, unknown)  # an older version's reading
    assert unknown == ["kind", "monitor"]
    with pytest.raises(Newer):
        stored_config(record, mon.run_id, "0.0.1")


# --- bad input: one line, a BatchlabError, never a silent zero ---------------------------------

def one_line(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text and all(w in text for w in words), text


def test_a_model_with_nothing_to_train_is_refused():
    frozen = factory((FEATURES,), CLASSES).requires_grad_(False)
    with pytest.raises(BatchlabError) as excinfo:
        TorchMonitor(frozen, db=None)
    one_line(excinfo, "no parameters that require grad")


def test_update_before_backward_is_refused():
    mon = TorchMonitor(factory((FEATURES,), CLASSES), db=None)
    with pytest.raises(BatchlabError) as excinfo:
        mon.update(batch_size=4)
    one_line(excinfo, "after loss.backward()")


def test_update_after_zero_grad_is_refused_not_recorded_as_zero():
    module = factory((FEATURES,), CLASSES)
    mon = TorchMonitor(module, db=None)
    F.cross_entropy(module(torch.ones(4, FEATURES)), torch.tensor([0, 1, 2, 0])).backward()
    module.zero_grad(set_to_none=False)
    with pytest.raises(BatchlabError) as excinfo:
        mon.update(batch_size=4)
    one_line(excinfo, "zero everywhere")


def test_a_batch_size_that_is_not_its_micro_batches_is_refused():
    module = factory((FEATURES,), CLASSES)
    mon = TorchMonitor(module, db=None)
    for rows in (3, 5):
        (F.cross_entropy(module(torch.ones(rows, FEATURES)), torch.zeros(rows).long()) * rows / 8).backward()
        mon.update(batch_size=rows, micro_batch=True)
    with pytest.raises(BatchlabError) as excinfo:
        mon.update(batch_size=16)
    one_line(excinfo, "3 + 5 = 8")
    for bad in (0, 2.5, True):
        with pytest.raises(BatchlabError):
            mon.update(batch_size=bad)


def test_a_store_that_is_not_writable_is_refused_before_training(tmp_path, monkeypatch):
    import sqlite3

    Store(tmp_path / "b.db").close()
    # A read-only file (as the store's own tests simulate it: root would write to a chmod-ed one).
    monkeypatch.setattr(Store, "_connect", lambda self: sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro",
                                                                        uri=True))
    with pytest.raises(StoreError) as excinfo:
        TorchMonitor(factory((FEATURES,), CLASSES), db=tmp_path / "b.db")
    one_line(excinfo, "cannot write to store")


def test_a_store_in_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(StoreError) as excinfo:
        TorchMonitor(factory((FEATURES,), CLASSES), db=tmp_path / "nowhere" / "b.db")
    one_line(excinfo, "does not exist")
