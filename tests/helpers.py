"""Shared by the crash tests: count stored runs, and SIGKILL a command once it stored one."""

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


def kill_after_first_stored_run(command: list[str], db, timeout: float = 120) -> None:
    """Start ``command``, wait until it has stored a run, then SIGKILL its whole process group."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
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
