"""Bad input through the real command line, in a subprocess: exit status 2, exactly one line on
stderr, no traceback, and the store's content unchanged (compared table by table, not by
mtime). Also what used to crash or hang: an unreachable target, a Ray address with no
cluster, Ctrl-C in the middle of a sweep."""

import http.server
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest
from helpers import count_stored_runs

from batchlab.sweep.spec import SweepSpec
from batchlab.sweep.run import run_sweep

SPEC = SweepSpec(name="s", data="blobs", hidden=(8,), batch_sizes="50,full", lr="0.05", seeds=1,
                 budget="epochs=3", target="test_acc>=0.6")
SWEEP = ["sweep", "--name", "s", "--data", "blobs", "--hidden", "8", "--batch-sizes", "50,full", "--lr", "0.05",
         "--seeds", "1", "--epochs", "3", "--target", "test_acc>=0.6", "--executor", "local"]


def batchlab(*args, cwd, stdin=subprocess.DEVNULL, timeout=120):
    """``batchlab ARGS`` in a fresh interpreter: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "batchlab.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, stdin=stdin, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def dump(db) -> dict:
    """Every table's rows, in order: the store's content."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    """A store holding one small sweep (2 runs), made once and copied by each test."""
    db = tmp_path_factory.mktemp("base") / "batchlab.db"
    run_sweep(SPEC, db, executor="local")
    return db


@pytest.fixture
def store(base_store, tmp_path):
    db = tmp_path / "batchlab.db"
    shutil.copy(base_store, db)
    (tmp_path / "afile").write_text("a file where a folder is expected")
    return db


def assert_refused(code, out, err, message):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err


# One or two of each class in a fresh interpreter (the real entry point, exit status, stderr)...
CASES = {
    "train --out is a file": (["train", "--data", "blobs", "--epochs", 1, "--hidden", 4, "--out", "afile"],
                              "it is a file, not a folder"),
    "export --out is a file": (["export", "--out", "afile"], "it is a file, not a folder"),
    "delete without a terminal": (["delete", "--batch-size", "50"], "add --yes"),
    "unknown option": (["train", "--bogus", 1], "No such option: --bogus"),
}
# ... and the rest in this process (same entry point, without 1-2 s of start-up each).
MORE_CASES = {
    "option without its value": (["train", "--data", "blobs", "-e"], "Option '-e' requires an argument"),
    "unknown command": (["bogus"], "No such command 'bogus'. (see `batchlab --help`)"),
    "missing option": (["plan", "--n", 100, "-e", 3], "Missing option '--batch-size'"),
    "seed over 64 bits": (["train", "--data", "blobs", "--seeds", "3,18446744073709551617"],
                          "seed must be an integer in [0, 2**63)"),
    "epochs beyond memory": (["train", "--data", "blobs", "--epochs", 100_000_000], "GiB of series"),
    "100,000 runs at once": (["train", "--data", "blobs", "--lr", ",".join(str(i / 100) for i in range(1, 11)),
                              "--seeds", 10_000, "--batch-size", "full", "--epochs", 1],
                             "100,000 run(s) trained together would take about"),
    "workers 0": ([*SWEEP[:-2], "--workers", 0], "workers must be an integer >= 1"),
    "noise B above N": (["noise", "--data", "blobs", "--hidden", 4, "--at-epochs", "1", "--batch-sizes", "1:4096",
                         "--trials", 4, "--out", "n"], "exceed the pool of 500 training rows"),
    "sweep redefined": ([*SWEEP[:10], "0.05,0.1", *SWEEP[11:]], "give this grid its own name with --name"),
    "train --out under a file": (["train", "--data", "blobs", "--epochs", 1, "--hidden", 4, "--out", "afile/x"],
                                 "cannot write the --out folder afile/x"),
    "analyze --out is a file": (["analyze", "--out", "afile"], "it is a file, not a folder"),
    "noise --out is a file": (["noise", "--data", "blobs", "--hidden", 4, "--at-epochs", "1", "--batch-sizes",
                               "1,8", "--trials", 4, "--out", "afile"], "it is a file, not a folder"),
    "study --out is a file": (["study", "brownlee", "--quick", "--out", "afile"], "it is a file, not a folder"),
    "negative seed": (["train", "--data", "blobs", "--seeds", "3,-1"], "seed must be an integer in [0, 2**63)"),
    "init seed over 64 bits": (["train", "--data", "blobs", "--init-seed", 2 ** 64], "init seed must be"),
    "absurd seed count": (["train", "--data", "blobs", "--seeds", "1e18"], "number of seeds must lie in"),
    "sweep epochs beyond memory": ([*SWEEP[:2], "big", *SWEEP[3:13], *SWEEP[15:], "--epochs", 10 ** 12],
                                   "GiB of series"),
    "noise pool of 1": (["noise", "--data", "blobs", "--at-epochs", "1", "--pool", 1, "--out", "n"],
                        "pool must be an integer >= 2"),
    "delete with no selection": (["delete"], "say which runs to delete"),
    "analyze unknown target": (["analyze", "--target", "val_f1>=3"], "unknown metric 'val_f1'"),
    "sweep config with epochs and budget": (["sweep", "--config", "both.toml"], "give epochs or budget, not both"),
    "sweep config of 100,000 runs": (["sweep", "--config", "huge.toml"], "100,000 run(s) trained together"),
}


@pytest.mark.parametrize("args, message", CASES.values(), ids=CASES.keys())
def test_refused_in_one_line_and_the_store_is_unchanged(store, tmp_path, args, message):
    before = dump(store)
    code, out, err = batchlab(*args, cwd=tmp_path)
    assert_refused(code, out, err, message)
    assert dump(store) == before
    assert not (tmp_path / "n").exists() and (tmp_path / "afile").is_file()


@pytest.mark.parametrize("args, message", MORE_CASES.values(), ids=MORE_CASES.keys())
def test_more_refusals_in_process(cli, store, tmp_path, args, message):
    (tmp_path / "both.toml").write_text('data = "blobs"\nepochs = 3\nbudget = "steps=10"\n')
    (tmp_path / "huge.toml").write_text('data = "blobs"\nepochs = 1\nbatch_sizes = "full"\nseeds = 10000\n'
                                        f'lr = "{",".join(str(i / 100) for i in range(1, 11))}"\n')
    before = dump(store)
    code, out, err = cli(*args)
    assert_refused(code, out, err, message)
    assert dump(store) == before
    assert not (tmp_path / "n").exists() and (tmp_path / "afile").is_file()


def test_a_target_no_batch_size_reaches_is_reported_not_reached(cli, store, tmp_path):
    code, out, err = cli("analyze", "--target", "test_acc>=0.999", "--out", "ana")
    assert code == 0 and "Traceback" not in err, err
    assert out.count("not reached") == 2  # both batch sizes, one row each
    assert (tmp_path / "ana" / "to_target_vs_batch.png").stat().st_size > 1000


def test_same_sweep_resumes_and_a_new_name_is_a_new_sweep(cli, store):
    code, out, err = cli(*SWEEP)
    assert code == 0 and "0 trained now, 2 already stored" in out, err
    code, out, err = cli(*SWEEP[:2], "s2", *SWEEP[3:10], "0.05,0.1", *SWEEP[11:])
    assert code == 0 and "4 runs, 2 trained now, 2 already stored" in out, err
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("SELECT sweep, count(*) FROM sweep_runs GROUP BY sweep").fetchall() == [("s", 2), ("s2", 4)]


def test_ray_address_where_no_cluster_answers_fails_fast(store, tmp_path):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = dump(store)
    start = time.perf_counter()
    code, out, err = batchlab(*SWEEP[:-2], "--name", "r", "--backend", "ray", "--address", f"127.0.0.1:{port}",
                              cwd=tmp_path)
    assert_refused(code, out, err, f"no Ray cluster answers at 127.0.0.1:{port}")
    assert time.perf_counter() - start < 30
    assert dump(store) == before


def test_ray_address_where_something_else_answers_is_refused(store, tmp_path):
    """A web server at --address is not taken for a cluster (Ray would retry it for minutes)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        start = time.perf_counter()
        code, out, err = batchlab(*SWEEP[:-2], "--name", "r", "--backend", "ray", "--address", address,
                                  cwd=tmp_path)
    finally:
        server.shutdown()
    assert_refused(code, out, err, f"{address} answers, but not as a Ray cluster does")
    assert time.perf_counter() - start < 30


def _ctrl_c_once_a_run_is_stored(args: list[str], db, cwd) -> list[str]:
    """Start ``batchlab ARGS``, press Ctrl-C once a run is in ``db``; its exit status must be 130
    and its stderr one line without a traceback: returns that stderr's lines."""
    proc = subprocess.Popen([sys.executable, "-m", "batchlab.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while count_stored_runs(db) == 0 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    db = tmp_path / "k.db"
    # Three cohorts, two of them long (B = 1 and 2: 250,000 updates or more), so that whichever
    # finishes first (the first whose program is compiled), a long one is still training when
    # Ctrl-C comes: with only B = 100 left (5,000 updates) the command could end before it.
    args = ["sweep", "--name", "k", "--data", "blobs", "--hidden", "8", "--batch-sizes", "100,2,1", "--lr", "0.05",
            "--seeds", "1", "--epochs", "1000", "--executor", "local", "--db", str(db)]
    lines = _ctrl_c_once_a_run_is_stored(args, db, tmp_path)
    assert lines[0].startswith("interrupted: 1 run(s) finished and were stored in")
    assert lines[0].endswith("resume with: batchlab " + " ".join(args))
    assert count_stored_runs(db) == 1


def test_ctrl_c_in_the_tour_says_what_was_saved_and_how_to_resume(tmp_path):
    db = tmp_path / "t.db"
    args = ["tour", "--db", str(db), "--out", str(tmp_path / "results"), "--report", str(tmp_path / "report")]
    lines = _ctrl_c_once_a_run_is_stored(args, db, tmp_path)  # the figure helpers print nothing either
    stored = count_stored_runs(db)
    assert stored >= 1 and lines[0].startswith(f"interrupted: {stored} run(s) finished and were stored in")
    assert lines[0].endswith(f"({stored} in all); resume with: batchlab " + " ".join(args))
