"""Shared by the tests: count stored runs, SIGKILL a command once it stored one, the environment
of a subprocess that trains long, and quick studies and small stores."""

import os
import signal
import sqlite3
import subprocess
import time


def count_stored_runs(db) -> int:
    """Runs in an SQLite store, 0 while it does not exist or is being created."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def batchlab_flags_env() -> dict[str, str]:
    """This environment without the suite's XLA_FLAGS (conftest.py), so that batchlab sets its
    own: for a subprocess whose time goes into running its programs (hundreds of thousands of
    steps), not into compiling them. Its runs compare with other such subprocesses' only."""
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def kill_after_first_stored_run(command: list[str], db, timeout: float = 120) -> None:
    """Start ``command`` (with :func:`batchlab_flags_env`), wait until it has stored a run, then
    SIGKILL its whole process group."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=batchlab_flags_env())
    deadline = time.time() + timeout
    while count_stored_runs(db) == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()


def quick_study(name: str, tmp_path_factory):
    """Run study ``name`` at quick size in a fresh store and folder; returns (result, db, out)."""
    from batchlab.studies import get_study
    from batchlab.studies.runner import run_study

    root = tmp_path_factory.mktemp(name.replace("-", "_"))
    db, out = root / "study.db", root / "out"
    return run_study(get_study(name), quick=True, db=db, out=out), db, out


def small_store(db, batch_sizes=(16, 50), seeds=(0, 1)):
    """A store of made-up finished runs on blobs (3 epochs, per-epoch and per-step series), written
    without training anything; returns their run ids."""
    import numpy as np

    from batchlab.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig
    from batchlab.results import RunResult
    from batchlab.store import Store

    runs = []
    for b in batch_sizes:
        for seed in seeds:
            config = RunConfig(DataConfig("blobs"), ModelConfig(hidden=(4,)), OptimizerConfig(lr=0.1), batch_size=b,
                               epochs=3, seed=seed)
            per_epoch, steps = -(-500 // b), 3 * -(-500 // b)
            history = {k: np.linspace(0.5, 0.9, 4) + 0.01 * seed for k in ("train_loss", "train_acc", "test_loss",
                                                                              "test_acc")}
            history.update(epoch=np.arange(4), step=np.arange(4) * per_epoch, samples_seen=np.arange(4) * 500)
            step = np.arange(1, steps + 1)
            series = {"mb_loss": np.cos(step / 7.0), "step": step, "epoch": (step - 1) // per_epoch + 1,
                      "samples_seen": step * b}
            runs.append(RunResult(config, "finished", history, series, best_epoch=3))
    with Store(db) as store:
        store.write(runs, "test")
    return [r.run_id for r in runs]
