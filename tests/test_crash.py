"""A killed process keeps every run it had stored, and a re-run finishes the rest."""

import subprocess
import sys

from helpers import batchlab_flags_env, kill_after_first_stored_run

from batchlab.store import Store

ARGS = ["--batch-size", "100,1", "--epochs", "400", "--lr", "0.01", "--hidden", "8"]


def test_sigkill_keeps_finished_cohorts(tmp_path, monkeypatch):
    # Cohorts one after another, so the kill surely comes while B=1 trains (side by side, which
    # finishes first depends on the machine's load).
    monkeypatch.setenv("BATCHLAB_THREADS", "1")
    db = tmp_path / "runs.db"
    command = [sys.executable, "-m", "batchlab.cli", "train", *ARGS, "--db", str(db), "--out", str(tmp_path / "o")]
    kill_after_first_stored_run(command, db)  # the B=1 cohort (200,000 updates) is still training
    with Store(db) as store:
        (survivor,) = store.load()
    assert survivor.config.batch_size == 100 and survivor.history["epoch"][-1] == 400

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=batchlab_flags_env())
    assert rerun.returncode == 0, rerun.stderr
    assert "1 run(s) were already in" in rerun.stdout
    with Store(db) as store:
        runs = store.load(steps=False)
    assert sorted(r.config.batch_size for r in runs) == [1, 100]
    again = [r for r in runs if r.config.batch_size == 100][0]
    assert (again.history["test_acc"] == survivor.history["test_acc"]).all()
