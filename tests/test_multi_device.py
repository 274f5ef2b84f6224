"""One run data parallel over several devices (``--devices``): 4 CPU devices made by XLA in a
process of its own (tests/device_split.py), against single-device training and against
gradients computed separately, per device and per sample."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4",
               BATCHLAB_CACHE_DIR=str(tmp_path_factory.mktemp("cache")))
    done = subprocess.run([sys.executable, str(HERE / "device_split.py")], capture_output=True, text=True, env=env,
                          timeout=300, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_and_four_devices_train_as_one(measured):
    """Partial last batch (a device with no real rows), dropout and micro-batches: the same
    parameters after 20 updates, to float rounding."""
    assert measured["devices"] == 4 and measured["steps"] == 20
    for devices, difference in measured["max_difference"].items():
        assert difference < 1e-5, devices


def test_per_device_parts_are_the_formula_on_each_devices_own_gradient(measured):
    square, rows = measured["parts"]
    by_hand, rows_by_hand = measured["parts_by_hand"]
    assert square == pytest.approx(by_hand, rel=1e-5)
    assert rows == pytest.approx(rows_by_hand, rel=1e-6) and rows == pytest.approx(3 / (1 / 4 + 1 / 4 + 1 / 3))


def test_online_estimate_over_devices_agrees_with_the_exact_one(measured):
    """At fixed parameters, batches drawn without replacement from N rows: the two-batch
    estimate's expectations are ||G||^2 - tr/(N-1) and tr N/(N-1) (tr: the population trace of
    the per-sample gradients' covariance), so those are the exact values it is held to: |G|^2
    within 3 standard errors, B_simple within 3 relative standard errors of |G|^2."""
    exact, online = measured["exact"], measured["online"]
    n = exact["n"]
    grad_sq = exact["grad_sq"] - exact["trace"] / (n - 1)
    trace = exact["trace"] * n / (n - 1)
    se = online["noise_grad_sq_se"]
    assert abs(online["noise_grad_sq"] - grad_sq) < 3 * se
    assert online["noise_scale"] == pytest.approx(trace / grad_sq, rel=3 * se / grad_sq)


def test_uneven_batches_and_missing_devices_are_refused(measured):
    assert measured["errors"]["uneven"] == ("batch size 30 does not split evenly over 4 devices: use a multiple of 4 "
                                            "(each device takes B / 4 rows)")
    assert measured["errors"]["too_many"].startswith("8 devices asked for; JAX sees 4 (cpu)")
    assert measured["all"] == 4


def test_a_saved_one_device_program_loads_onto_one_device(measured):
    """Compiled programs kept on disk run on JAX's default device even where JAX sees several
    (they were loaded onto every device, and refused their one-device arguments)."""
    assert measured["saved_program"] == [2.0, 2.0, 2.0]


class FakeRay:
    """What ray_resources reads of a cluster: its total resources and its nodes."""

    def __init__(self, gpus_per_node):
        self.nodes_ = [{"Alive": True, "Resources": {"CPU": 8.0, **({"GPU": float(g)} if g else {})}}
                       for g in gpus_per_node]

    def cluster_resources(self):
        return {"GPU": float(sum(n["Resources"].get("GPU", 0) for n in self.nodes_))} if any(
            n["Resources"].get("GPU") for n in self.nodes_) else {"CPU": 8.0}

    def nodes(self):
        return self.nodes_


def test_each_cohort_asks_ray_for_a_gpu_per_device():
    from batchlab.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig
    from batchlab.engine.executors import ray_resources
    from batchlab.errors import BatchlabError

    def cohort(devices):
        return [RunConfig(DataConfig("blobs"), ModelConfig(), OptimizerConfig(), batch_size=64, epochs=1,
                          devices=devices)]

    assert ray_resources(FakeRay([0, 0]), cohort(1)) == {"num_cpus": 1}
    assert ray_resources(FakeRay([8, 4]), cohort(4)) == {"num_cpus": 1, "num_gpus": 4}
    assert ray_resources(FakeRay([8, 4]), cohort(1)) == {"num_cpus": 1, "num_gpus": 1}
    with pytest.raises(BatchlabError, match="over 16 GPUs; the largest node of this Ray cluster has 8"):
        ray_resources(FakeRay([8, 8]), cohort(16))


def test_two_processes_train_as_one_over_loopback():
    """jax.distributed over two processes of 2 CPU devices each (gloo collectives bound to
    127.0.0.1): the 4-device run equals single-device training, and no connection of either
    process leaves the loopback address."""
    import socket

    import batchlab

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    children = [subprocess.Popen([sys.executable, str(HERE / "multi_host.py"), str(i), port], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=HERE.parent) for i in range(2)]
    reports = []
    for child in children:
        try:
            stdout, stderr = child.communicate(timeout=180)
        finally:
            child.kill()
        assert child.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    alone = batchlab.train("iris", "mlp", batch_size=32, epochs=3, lr=0.1, db=None).runs[0].history["train_loss"]
    for report in reports:
        assert (report["devices"], report["local"]) == (4, 2)
        assert report["loss"] == pytest.approx(list(alone), abs=1e-5)
        assert report["remote"] and set(report["remote"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
