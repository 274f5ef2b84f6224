"""Stores held by another process, and stores a killed writer left mid-transaction: a command
waits a stated time and names the holder; ``check`` reads a hot journal's store as the next
command will find it (rolled back), without changing it."""

import signal
import subprocess
import sys
import threading

import pytest
from stores import small_store

from batchlab.errors import StoreError
from batchlab.store import Store, check_integrity

# Holds the store open in a transaction of the kind given (EXCLUSIVE, IMMEDIATE), says "held",
# and lets go when its stdin closes.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN " + sys.argv[2])
conn.execute("INSERT INTO meta VALUES ('holder', 'x')")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the store ``batchlab.db`` of ``tmp_path``; yields a function
    (kind) -> process; the processes are ended at the end of the test."""
    started = []

    def hold(db, kind="EXCLUSIVE"):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), kind], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in started:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.fixture
def store_of_four(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "batchlab.db"
    return db, small_store(db, n=4)


def error_line(err):
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_locked_store_names_its_holder_after_the_stated_wait(store_of_four, holder, cli, monkeypatch):
    db, _ = store_of_four
    proc = holder(db)
    monkeypatch.setenv("BATCHLAB_LOCK_TIMEOUT", "0.3")
    for command in ("runs", "check"):
        code, out, err = cli(command, "--db", db.name)
        assert code == 2, out + err
        line = error_line(err)
        assert f"{db.name} is locked: pid {proc.pid} (" in line and "holds an exclusive lock" in line, line
        assert "waited 0.3 s" in line and "BATCHLAB_LOCK_TIMEOUT" in line
        assert "waiting up to 0.3 s" in err  # said before waiting


def test_a_command_waits_for_the_holder_to_finish(store_of_four, holder, cli, monkeypatch):
    db, runs = store_of_four
    proc = holder(db)
    monkeypatch.setenv("BATCHLAB_LOCK_TIMEOUT", "60")
    threading.Timer(0.5, proc.stdin.close).start()
    code, out, err = cli("runs", "--db", db.name)
    assert code == 0, err
    assert f"pid {proc.pid}" in err and "waiting up to 60 s" in err
    assert all(r.run_id[:8] in out for r in runs)


def test_a_writer_with_an_open_transaction_lets_readers_read_but_not_write(store_of_four, holder, monkeypatch):
    db, runs = store_of_four
    proc = holder(db, "IMMEDIATE")
    monkeypatch.setenv("BATCHLAB_LOCK_TIMEOUT", "0.2")
    report = check_integrity(db)  # a live writer's journal is not hot: the committed runs are read
    assert report.sound and not report.notes and len(report.intact) == len(runs)
    with Store(db, create=False) as store:
        assert len(store.load()) == len(runs)
        with pytest.raises(StoreError, match=f"pid {proc.pid} .* holds a reserved lock") as info:
            store.check_writable()
        assert "\n" not in str(info.value)


def kill_mid_write(db):
    """A writer SIGKILLed mid-transaction, after it deleted every series (spilled to the file)."""
    script = ("import os, signal, sqlite3, sys\n"
              "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "conn.execute('PRAGMA cache_size = 1')\n"
              "conn.execute('BEGIN')\n"
              "conn.execute('DELETE FROM series')\n"
              "conn.executemany('INSERT INTO meta VALUES (?, ?)', [(f'k{i}', 'x' * 200) for i in range(500)])\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(db)])
    assert proc.returncode == -signal.SIGKILL


def test_check_of_a_hot_journal_says_the_next_command_rolls_it_back(store_of_four, cli):
    db, runs = store_of_four
    kill_mid_write(db)
    journal = db.with_name(db.name + "-journal")
    before = (db.read_bytes(), journal.read_bytes())
    code, out, err = cli("check", "--db", db.name)
    assert code == 0, out + err
    first = " ".join(out.split("sqlite integrity_check")[0].split())  # the note, wrapped to 80 columns
    assert first.startswith("note: an interrupted write") and journal.name in first and "rolls it back" in first, out
    out = " ".join(out.split())
    assert "4 of 4 runs are readable" in out and out.strip().endswith(f"{db.name}: ok")
    assert (db.read_bytes(), journal.read_bytes()) == before  # the check changed nothing
    code, out, err = cli("runs", "--db", db.name)  # the next command rolls it back: every run is there
    assert code == 0 and all(r.run_id[:8] in out for r in runs) and not journal.exists()
