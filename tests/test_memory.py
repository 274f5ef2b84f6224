"""Memory stays bounded whatever the epochs: per-step records are thinned beyond STEP_RECORDS
updates (every k-th kept), the estimate that refuses too-large plans is within 25% of what is
measured, and a long B = 1 run trains under a memory limit that keeping every step exceeds."""

import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import batchlab
from batchlab.engine import records
from batchlab.grid import memory_estimate
from helpers import batchlab_flags_env


@pytest.mark.parametrize("epochs, seeds, instruments", [(100, 2, None), (60, 1, "standard")])
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(epochs, seeds, instruments, tmp_path):
    settings = dict(batch_size=1, epochs=epochs, lr=0.001, seeds=seeds, instruments=instruments)
    batchlab.train("blobs", **{**settings, "epochs": 1})  # compiled, outside the measurement
    tracemalloc.start()
    try:
        batchlab.train("blobs", db=tmp_path / "runs.db", **settings)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    configs, dataset, _ = batchlab.api.prepare("blobs", **settings)
    estimate = memory_estimate(configs, dataset.n_train)
    assert 0.75 * peak <= estimate <= 1.25 * peak, (estimate, peak)


def test_a_long_run_keeps_every_kth_step_and_all_its_epochs(monkeypatch):
    monkeypatch.setattr(records, "STEP_RECORDS", 1000)
    run = batchlab.train("blobs", batch_size=50, epochs=250, lr=0.05, instruments="grad_norm").runs[0]
    updates = 10 * 250
    k = records.record_every(updates)
    assert k == 3
    np.testing.assert_array_equal(run.steps["step"], np.arange(k, updates + 1, k))
    assert len(run.history["epoch"]) == 251 and run.history["step"][-1] == updates
    monkeypatch.setattr(records, "STEP_RECORDS", 10 ** 9)
    every = batchlab.train("blobs", batch_size=50, epochs=250, lr=0.05, instruments="grad_norm").runs[0]
    # the kept steps are exactly those of the full record; per-epoch records use every step
    np.testing.assert_array_equal(run.steps["grad_norm"], every.steps["grad_norm"][k - 1::k])
    np.testing.assert_array_equal(run.history["train_loss_running"], every.history["train_loss_running"])


CHILD = textwrap.dedent("""
    import resource, sys
    import batchlab

    batchlab.train("blobs", batch_size=1, epochs=2, lr=0.001)  # JAX loaded and the programs compiled
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData"))
    limit = used + 96 * 2 ** 20  # what keeping all 2,000,000 steps' records needs, and more, is not there
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    run = batchlab.train("blobs", batch_size=1, epochs=4000, lr=0.001).runs[0]
    print(run.status, run.history["step"][-1], len(run.steps["step"]))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc are Linux's")
def test_two_million_steps_train_under_a_memory_limit():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=240,
                          env=batchlab_flags_env())
    assert done.returncode == 0, done.stderr[-2000:]
    status, updates, kept = done.stdout.split()
    assert (status, int(updates), int(kept)) == ("finished", 2_000_000, 200_000)


def test_monte_carlo_trials_run_in_bounded_chunks(monkeypatch):
    """However many trials are asked for, they are drawn and summed in chunks of bounded
    memory: the same batches as one draw (the sums' rounding may differ in matrix products)."""
    from batchlab.instruments import gradients

    g = np.random.default_rng(0).normal(size=(50, 7))
    k = g @ g.T
    whole = gradients.monte_carlo(k, [1, 4, 50], 1000, 3, replace=False)
    monkeypatch.setattr(gradients, "TRIAL_BYTES", 24 * 50 * 7)  # chunks of 7 trials
    chunked = gradients.monte_carlo(k, [1, 4, 50], 1000, 3, replace=False)
    for b in whole:
        assert len(chunked[b]) == 1000
        np.testing.assert_allclose(chunked[b], whole[b], rtol=1e-6)
    np.testing.assert_array_equal(chunked[4], whole[4])  # summed block by block: the same bits
