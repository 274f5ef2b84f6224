"""Small stores made without training (no JAX): runs with made-up series, and a run as a newer
batchlab would store it."""

import hashlib
import json
import sqlite3

import numpy as np

from batchlab.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig, identity
from batchlab.results import RunResult
from batchlab.store import Store
from batchlab.version import __version__


def made_up_runs(n: int, batch_sizes=(25, 50)) -> list[RunResult]:
    """``n`` runs of blobs (seeds x batch sizes) with three epochs of made-up metrics."""
    runs = []
    for i in range(n):
        cfg = RunConfig(DataConfig("blobs"), ModelConfig(hidden=(4,)), OptimizerConfig(lr=0.05),
                        batch_size=batch_sizes[i % len(batch_sizes)], epochs=2, seed=i // len(batch_sizes))
        epochs = np.arange(3)
        history = {"epoch": epochs, "step": epochs * 10, "samples_seen": epochs * 500,
                   "train_loss": 1.0 / (epochs + 1 + i), "train_acc": 0.5 + 0.1 * epochs,
                   "test_loss": 1.1 / (epochs + 1 + i), "test_acc": 0.45 + 0.1 * epochs}
        runs.append(RunResult(cfg, "finished", history, {"mb_loss": np.linspace(1, 0.5, 20)}, best_epoch=2))
    return runs


def small_store(path, n: int = 4) -> list[RunResult]:
    """A store of ``n`` made-up runs at ``path``; returns them."""
    runs = made_up_runs(n)
    with Store(path) as store:
        store.write(runs, __version__)
    return runs


def store_as_newer(path, run: RunResult, settings: dict[str, object], version: str = "9.0.0") -> str:
    """Store a copy of ``run`` as a newer batchlab would: its config with ``settings`` (dotted
    names this version does not know), its id hashed over them (as ``RunConfig.run_id`` does) and
    ``version``. Returns the id."""
    config, ident = run.config.to_dict(), identity(run.config)
    for name, value in settings.items():
        *sections, key = name.split(".")
        for target in (config, ident):
            for section in sections:
                target = target[section]
            target[key] = value
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True, default=list).encode()).hexdigest()[:16]
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO runs (run_id, status, config, version, created, best_epoch) "
                     "VALUES (?, ?, ?, ?, 0, ?)",
                     (run_id, run.status, json.dumps(config, sort_keys=True), version, run.best_epoch))
        conn.execute("INSERT INTO series SELECT ?, level, name, dtype, data FROM series WHERE run_id = ?",
                     (run_id, run.run_id))
    conn.close()
    return run_id


def edit_config(path, run_id: str, edit) -> None:
    """Replace a stored run's config by ``edit(config dict)`` (its id is left as it was)."""
    with sqlite3.connect(path) as conn:
        config = json.loads(conn.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
        conn.execute("UPDATE runs SET config = ? WHERE run_id = ?", (json.dumps(edit(config)), run_id))
    conn.close()
