"""Sweeps: grid expansion, budgets, lr rules, executors, resuming after SIGKILL, analysis."""

import sqlite3
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import batchlab_flags_env, count_stored_runs, kill_after_first_stored_run

from batchlab.config import DataConfig, ModelConfig, OptimizerConfig
from batchlab.engine.optim import make_optimizer
from batchlab.errors import BatchlabError
from batchlab.store import Store
from batchlab.sweep.spec import SweepSpec, expand, read_spec
from batchlab.sweep.run import run_sweep

DATA, MODEL = DataConfig("blobs"), ModelConfig("mlp", (8,))
SMALL = SweepSpec(name="small", data="blobs", hidden=(8,), batch_sizes="50,full", lr="0.05,0.2", seeds=2,
                  budget="epochs=3", target="test_acc>=0.7")


def test_expansion_budgets_and_lr_rules():
    spec = SweepSpec(batch_sizes="1:64,full", lr="0.01,0.1", seeds=3, budget="epochs=5")
    configs = expand(spec, DATA, MODEL, 500)
    assert len(configs) == 8 * 2 * 3 and {c.epochs for c in configs} == {5}
    by_steps = expand(SweepSpec(batch_sizes="10,100,full", lr="0.1", seeds=1, budget="steps=1000"), DATA, MODEL, 500)
    assert [c.epochs for c in by_steps] == [20, 200, 1000]  # 50, 5 and 1 updates per epoch
    by_samples = expand(SweepSpec(batch_sizes="10,full", lr="0.1", seeds=1, budget="samples=1e4"), DATA, MODEL, 500)
    assert [c.epochs for c in by_samples] == [20, 20]
    linear = expand(SweepSpec(batch_sizes="16,64", seeds=1, lr_scaling="linear", base_lr=0.01, base_batch=32),
                    DATA, MODEL, 500)
    assert [c.optimizer.lr for c in linear] == pytest.approx([0.005, 0.02])
    root = expand(SweepSpec(batch_sizes="8,128", seeds=1, lr_scaling="sqrt", base_lr=0.01, base_batch=32),
                  DATA, MODEL, 500)
    assert [c.optimizer.lr for c in root] == pytest.approx([0.005, 0.02])
    warm = expand(SweepSpec(batch_sizes="50", seeds=1, warmup_epochs=2), DATA, MODEL, 500)
    assert warm[0].optimizer.warmup_steps == 20


@pytest.mark.parametrize("spec, message", [
    (dict(batch_sizes="8,900"), "batch size 900 is outside"),
    (dict(batch_sizes=""), "batch size"),
    (dict(batch_sizes="8", budget="hours=3"), "budget must be"),
    (dict(batch_sizes="8", lr_scaling="cubic"), "unknown lr scaling"),
    (dict(batch_sizes="8", lr_scaling="linear", base_batch=0), "base batch size must be an integer >= 1"),
])
def test_bad_grids(spec, message):
    with pytest.raises(BatchlabError, match=message):
        expand(SweepSpec(**spec), DATA, MODEL, 500)


def test_warmup_ramps_the_learning_rate():
    opt = make_optimizer(OptimizerConfig("sgd", 0.4, 0.0, warmup_steps=4))
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    steps = []
    for _ in range(5):
        updates, state = opt.update({"w": jnp.ones(2)}, state, params)
        steps.append(float(-updates["w"][0]))
    assert steps == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


def test_toml_config(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('name = "t"\ndata = "blobs"\nbatch_sizes = [8, 32, "full"]\nlr = [0.01, 0.1]\nseeds = 2\n')
    spec = read_spec(path, seeds=4)
    assert (spec.name, spec.batch_size, spec.lr, spec.seeds) == ("t", [8, 32, "full"], [0.01, 0.1], [0, 1, 2, 3])
    (tmp_path / "bad.toml").write_text("name = ")
    with pytest.raises(BatchlabError, match="not readable TOML"):
        read_spec(tmp_path / "bad.toml")
    (tmp_path / "odd.toml").write_text('colour = "blue"\n')
    with pytest.raises(BatchlabError, match="unknown key"):
        read_spec(tmp_path / "odd.toml")


def test_toml_epochs_key_is_the_epochs_option(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('data = "blobs"\nepochs = 7\nlr = 0.05\nhidden = [8, 4]\n')
    spec = read_spec(path)
    assert (spec.budget, spec.lr, spec.hidden) == ("epochs=7", [0.05], (8, 4))
    assert {c.epochs for c in expand(spec.replace(batch_sizes="50"), DATA, MODEL, 500)} == {7}
    path.write_text('seeds = "many"\n')
    with pytest.raises(BatchlabError, match="sweep config .*: number of seeds must be an integer, got 'many'"):
        read_spec(path)


def stored(db):
    with Store(db) as store:
        return {r.run_id: r for r in store.load(steps=True)}


def assert_same_runs(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for run_id in a:
        for key, values in a[run_id].history.items():
            if key != "wall_time":
                np.testing.assert_array_equal(values, b[run_id].history[key])
        np.testing.assert_array_equal(a[run_id].steps["mb_loss"], b[run_id].steps["mb_loss"])


def test_processes_and_local_executors_store_the_same_results(tmp_path):
    local, procs = tmp_path / "local.db", tmp_path / "procs.db"
    first = run_sweep(SMALL, local, executor="local")
    assert first.trained == 8 and first.skipped == 0
    run_sweep(SMALL, procs, executor="processes", workers=2)
    assert_same_runs(stored(local), stored(procs))
    again = run_sweep(SMALL, local, executor="local")
    assert again.trained == 0 and again.skipped == 8


def test_sigkill_then_resume_stores_every_run_once_and_identically(tmp_path):
    args = ["sweep", "--name", "k", "--data", "blobs", "--hidden", "8", "--batch-sizes", "100,10,1",
            "--lr", "0.05", "--seeds", "2", "--epochs", "60", "--executor", "local"]
    killed, clean = tmp_path / "killed.db", tmp_path / "clean.db"
    command = [sys.executable, "-m", "batchlab.cli", *args, "--db", str(killed)]
    kill_after_first_stored_run(command, killed)
    partial = count_stored_runs(killed)
    assert 0 < partial < 6
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=batchlab_flags_env())
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - partial} trained now, {partial} already stored" in resumed.stdout
    subprocess.run([sys.executable, "-m", "batchlab.cli", *args, "--db", str(clean)], check=True,
                   capture_output=True, timeout=300, env=batchlab_flags_env())
    with sqlite3.connect(killed) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT run_id) FROM runs").fetchone() == (6, 6)
    assert_same_runs(stored(killed), stored(clean))


def test_sweep_and_analyze_cli(cli, tmp_path):
    code, out, err = cli("sweep", "--name", "s", "--data", "blobs", "--hidden", 8, "--batch-sizes", "8,32,128,full",
                         "--lr", "0.05,0.2", "--seeds", 2, "--epochs", 15, "--target", "test_acc>=0.75",
                         "--momentum", 0.9, "--executor", "local")
    assert code == 0, err
    assert "16 runs, 16 trained now" in out
    code, out, err = cli("analyze", "--sweep", "s", "--out", "ana")
    assert code == 0, err
    assert "to reach test_acc>=0.75" in out
    for name in ("settings.csv", "best_per_batch.csv", "to_target_vs_batch.png", "lr_batch_heatmap.png",
                 "final_metrics_vs_batch.png", "learning_curves_best_lr.png"):
        assert (tmp_path / "ana" / name).stat().st_size > 100


@pytest.mark.parametrize("args, message", [
    (["sweep", "--batch-sizes", "8,4096", "--data", "blobs"], "batch size 4096 is outside"),
    (["sweep", "--target", "val_f1>=0.9", "--data", "blobs"], "unknown metric 'val_f1'"),
    (["sweep", "--config", "missing.toml"], "does not exist"),
    (["sweep", "--batch-sizes", "", "--data", "blobs"], "batch size"),
    (["sweep", "--epochs", "3", "--budget", "steps=10"], "not both"),
    (["analyze", "--db", "none.db"], "no batchlab store"),
])
def test_sweep_bad_input(cli, tmp_path, args, message):
    code, out, err = cli(*args)
    assert code == 2 and message in err and "Traceback" not in err + out
    assert not (tmp_path / "batchlab.db").exists()


RAY_DRIVER = """
import sys

import psutil
import ray
from batchlab.engine.executors import _ray_init, check_ray_address
from batchlab.sweep.spec import SweepSpec
from batchlab.sweep.run import run_sweep

_ray_init(ray, None, 2)  # the Ray the ray executor starts, kept up here to look at its connections
spec = SweepSpec(name="small", data="blobs", hidden=(8,), batch_sizes="50,full", lr="0.05,0.2", seeds=2,
                 budget="epochs=3", target="test_acc>=0.7")
run_sweep(spec, sys.argv[1], executor="ray", workers=2)
run_sweep(SweepSpec(name="file", data="blobs", model=sys.argv[3], batch_sizes="50", lr="0.05", seeds=1,
                    budget="epochs=2"), sys.argv[2], executor="ray", workers=2)
check_ray_address(ray.get_runtime_context().gcs_address)  # a real head passes the probe --address makes
peers, listening = set(), set()
for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
    for connection in process.net_connections(kind="inet"):
        (peers.add(connection.raddr.ip) if connection.raddr else listening.add(connection.laddr.ip))
loopback = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
assert peers <= loopback and listening <= loopback, f"Ray talks to {peers}, listens on {listening}"
ray.shutdown()
"""

# A model given as a file: Ray's workers import it by its absolute path (the driver runs in another folder).
MODEL_FILE = """
import jax
import batchlab


def make_model(input_shape, num_classes):
    def init(key):
        return {"w": jax.random.normal(key, (input_shape[0], num_classes)) * 0.1}, {}

    def apply(params, state, x, *, train=False, key=None):
        return x @ params["w"], state

    return batchlab.Model(init, apply, "linear")
"""


def test_ray_executor_stores_the_same_results_as_local(tmp_path):
    local, on_ray, file_here, file_on_ray = (tmp_path / f"{name}.db" for name in ("local", "ray", "fh", "fr"))
    (tmp_path / "nets.py").write_text(MODEL_FILE)
    model = f"{tmp_path / 'nets.py'}:make_model"
    run_sweep(SMALL, local, executor="local")
    run_sweep(SweepSpec(name="file", data="blobs", model=model, batch_sizes="50", lr="0.05", seeds=1,
                        budget="epochs=2"), file_here, executor="local")
    driver = subprocess.run([sys.executable, "-W", "always", "-c", RAY_DRIVER, str(on_ray), str(file_on_ray), model],
                            capture_output=True, text=True, timeout=300, cwd="/")
    assert driver.returncode == 0, driver.stderr[-3000:]
    assert "os.fork() was called" not in driver.stderr
    assert_same_runs(stored(local), stored(on_ray))
    here, there = stored(file_here), stored(file_on_ray)
    assert len(there) == 1 and set(there) == set(here)  # one config, one model identity
    for run_id, run in there.items():
        # Equal up to float rounding: a Ray worker's scanned epochs differ from this process's in
        # the last bit of some steps (seen with Ray only; worker processes and repeated local runs
        # agree bit for bit, tests/test_programs.py and above).
        np.testing.assert_allclose(run.steps["mb_loss"], here[run_id].steps["mb_loss"], rtol=1e-6, atol=1e-7)


def test_local_threads_store_the_same_results_as_one_thread(tmp_path):
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    run_sweep(SMALL, one, executor="local", workers=1)
    run_sweep(SMALL, two, executor="auto", workers=2)
    assert_same_runs(stored(one), stored(two))
