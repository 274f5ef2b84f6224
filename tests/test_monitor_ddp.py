"""TorchMonitor under DDP: two processes on the gloo backend over 127.0.0.1 (this test's process
is rank 0, a child rank 1). The two-batch estimate (the mean of the ranks' squared gradient
norms, batch b each, against the all-reduced gradient, batch 2b) equals the formula evaluated
on the two ranks' gradients computed separately, here, without DDP."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from monitor_ddp_worker import LR, PER_RANK, STEPS, WORLD, data, rows, tiny_model, train_rank  # noqa: E402
from monitor_reference import sq, two_batch_series  # noqa: E402

from batchlab.store import Store  # noqa: E402


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def reference():
    """The same training without DDP: each rank's gradient on its rows, their mean for the step."""
    module, (x, y) = tiny_model(), data()
    params = list(module.parameters())
    small, big, norms = [], [], []
    for step in range(STEPS):
        grads = [torch.autograd.grad(F.cross_entropy(module(x[rows(step, r)]), y[rows(step, r)]), params)
                 for r in range(WORLD)]
        mean = [sum(g) / WORLD for g in zip(*grads)]
        small.append(np.mean([sq(g) for g in grads]))  # each rank's own gradient, averaged
        big.append(sq(mean))
        norms.append(np.sqrt(sq(mean)))
        with torch.no_grad():
            for p, g in zip(params, mean):
                p -= LR * g
    return norms, two_batch_series(small, [PER_RANK] * STEPS, big, [WORLD * PER_RANK] * STEPS)


def test_rank_gradients_against_the_all_reduced_one_give_the_two_batch_estimate(tmp_path):
    port, db = free_port(), tmp_path / "ddp.db"
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, os.path.join(here, "monitor_ddp_worker.py"), "1", port], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        train_rank(0, port, str(db))
    finally:
        output = child.communicate(timeout=120)[0]
    assert child.returncode == 0, output
    assert not torch.distributed.is_initialized()  # the other tests of this process see no process group
    with Store(db, create=False) as store:
        (run,) = store.load()
    norms, want = reference()
    s = run.steps
    np.testing.assert_array_equal(s["samples_seen"], np.arange(1, STEPS + 1) * WORLD * PER_RANK)
    assert run.config.batch_size == WORLD * PER_RANK and run.monitored.settings["world_size"] == WORLD
    np.testing.assert_allclose(s["grad_norm"], norms, rtol=1e-5)
    for name in ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale"):
        np.testing.assert_allclose(s[name], want[name], rtol=1e-4, equal_nan=True, err_msg=name)
    assert np.isfinite(s["noise_trace"]).all() and (s["noise_trace"] > 0).all()
