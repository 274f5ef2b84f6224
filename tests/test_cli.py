"""The command line: what a user sees, and what is (not) written on bad input."""

import numpy as np
import pandas as pd
import pytest


def test_plan_prints_the_bookkeeping(cli):
    code, out, _ = cli("plan", "--n", 200, "--batch-size", 5, "--epochs", 1000)
    assert code == 0
    assert " ".join(out.split()) == ("mini-batch gradient descent: 40 batches (updates) per epoch, "
                                     "40,000 updates, 200,000 samples seen")  # wrapped to 80 columns
    assert max(len(line) for line in out.splitlines()) <= 80


def test_train_runs_export(cli, tmp_path):
    code, out, err = cli("train", "--data", "blobs", "--batch-size", "16,full", "--lr", "0.01", "--seeds", 2,
                         "--epochs", 3, "--momentum", 0.9, "--hidden", 8)
    assert code == 0, err
    assert "4 run(s)" in out and "learning_curves_acc.png" in out
    assert (tmp_path / "batchlab.db").exists()
    assert (tmp_path / "batchlab-out" / "learning_curves_acc.png").stat().st_size > 1000
    code, out, _ = cli("runs")
    assert code == 0 and "4 run(s) in batchlab.db" in out
    code, out, _ = cli("export", "--format", "csv", "--out", "exported")
    assert code == 0
    runs = pd.read_csv(tmp_path / "exported" / "runs.csv")
    epochs = pd.read_csv(tmp_path / "exported" / "epochs.csv")
    steps = pd.read_csv(tmp_path / "exported" / "steps.csv")
    assert len(runs) == 4 and set(runs.batch_size) == {16, 500}
    assert len(epochs) == 4 * 4  # epochs 0..3
    assert len(steps) == 2 * 3 * 32 + 2 * 3 * 1
    assert {"config", "version"} <= set(runs.columns)
    code, _, _ = cli("export", "--format", "parquet", "--out", "pq")
    assert code == 0 and len(pd.read_parquet(tmp_path / "pq" / "steps.parquet")) == len(steps)
    code, out, _ = cli("train", "--data", "blobs", "--batch-size", "16,full", "--lr", "0.01", "--seeds", 2,
                       "--epochs", 3, "--momentum", 0.9, "--hidden", 8)
    assert code == 0 and "4 run(s) were already in" in out


BAD = [
    (["train", "--batch-size", "0"], "batch size must be >= 1"),
    (["train", "--batch-size", "-4"], "batch size"),
    (["train", "--batch-size", "2.5"], "batch size must be an integer"),
    (["train", "--batch-size", "501"], "batch size 501 is outside [1, N=500]"),
    (["train", "--batch-size", "1,9999"], "batch size 9999 is outside"),
    (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["train", "--lr", "0"], "learning rate must be > 0"),
    (["train", "--lr", "-0.1"], "learning rate must be > 0"),
    (["train", "--lr", "nan"], "learning rate must be finite"),
    (["train", "--lr", "inf"], "learning rate must be finite"),
    (["train", "--data", "imagenet"], "unknown data 'imagenet'"),
    (["train", "--model", "transformer"], "unknown model 'transformer'"),
    (["train", "--data", "missing.npz"], "does not exist"),
    (["train", "--optimizer", "lion"], "unknown optimizer"),
    (["train", "--shuffle", "sometimes"], "unknown shuffle mode"),
    (["train", "--momentum", "1.5"], "momentum must lie in"),
    (["train", "--patience", "3", "--monitor", "val_f1"], "cannot monitor 'val_f1'"),
    (["plan", "--n", "100", "--batch-size", "200", "--epochs", "1"], "batch size 200 is outside"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, message):
    code, out, err = cli(*args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err + out
    assert not (tmp_path / "batchlab.db").exists() and not (tmp_path / "batchlab-out").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\x00\x01garbage", "not a readable .npz"),
])
def test_bad_data_file_on_the_cli(cli, tmp_path, content, message):
    (tmp_path / "d.npz").write_bytes(content)
    code, _, err = cli("train", "--data", "d.npz")
    assert code == 2 and message in err and "Traceback" not in err


def test_nan_in_data_file(cli, tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3))
    x[4, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 2)
    code, _, err = cli("train", "--data", "d.npz")
    assert code == 2 and "contains NaN (first at row" in err


def test_foreign_db_is_refused_and_kept(cli, tmp_path):
    (tmp_path / "batchlab.db").write_text("not mine to overwrite")
    code, _, err = cli("train", "--epochs", 1)
    assert code == 2 and "not a batchlab store" in err
    assert (tmp_path / "batchlab.db").read_text() == "not mine to overwrite"
    code, _, err = cli("runs", "--db", "nothing.db")
    assert code == 2 and "no batchlab store" in err


def test_diverging_run_is_reported(cli):
    code, out, _ = cli("train", "--batch-size", 8, "--lr", "0.01,1e6", "--momentum", 0.9, "--epochs", 2,
                       "--hidden", 8)
    assert code == 0 and "diverged@" in out and "finished" in out


def test_version(cli):
    from batchlab import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"batchlab {__version__}"


def test_tables_fit_80_columns_and_show_what_differs(cli):
    for optimizer in ("sgd", "adam"):
        code, _, err = cli("train", "--data", "blobs", "--batch-size", "16,full", "--seeds", 2, "--epochs", 2,
                           "--hidden", 4, "--optimizer", optimizer)
        assert code == 0, err
    code, out, _ = cli("runs")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    header = next(line for line in out.splitlines() if "run" in line and "status" in line)
    assert "opt" in header and "seed" in header and "B" in header  # what tells the runs apart stays
    assert "adam" in out and "sgd" in out
    assert "not shown to fit 80 columns: " in out and "samples" not in header
    code, wide, _ = cli("runs", "--wide")
    wide_header = next(line for line in wide.splitlines() if "run" in line and "status" in line)
    assert "samples" in wide_header and "train loss" in wide_header and "not shown" not in wide


def test_per_run_seconds_divide_the_cohort_time():
    from batchlab.runs_table import per_run_seconds

    rows = [{"batch_size": b, "lr": lr, "seed": seed, "train_seconds": s}
            for b, lr, seed, s in [(16, 0.1, 0, 3.0), (16, 0.1, 1, 3.0), (16, 0.2, 0, 3.0), (500, 0.1, 0, 0.5)]]
    assert per_run_seconds(rows) == pytest.approx([1.0, 1.0, 1.0, 0.5])


def test_runs_filters_delete_and_check(cli, tmp_path):
    code, _, err = cli("train", "--data", "blobs", "--batch-size", "16,full", "--seeds", 2, "--epochs", 1,
                       "--hidden", 4)
    assert code == 0, err
    code, out, _ = cli("runs", "--batch-size", 16, "--status", "finished", "--model", "mlp", "--data", "blobs")
    assert code == 0 and "2 of 4 run(s)" in out
    code, out, _ = cli("runs", "--data", "digits")
    assert code == 0 and "no run of the 4" in out
    code, out, err = cli("delete", "--batch-size", 16, "--yes")
    assert code == 0 and "deleted 2 run(s)" in out, err
    code, out, _ = cli("runs")
    assert "2 run(s) in batchlab.db" in out and " 16 " not in out
    code, out, _ = cli("check")
    assert code == 0 and "2 of 2 runs are readable" in out and out.strip().endswith("ok")
    damaged = bytearray((tmp_path / "batchlab.db").read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 4096] = b"\xff" * 4096
    (tmp_path / "bad.db").write_bytes(bytes(damaged))
    code, out, _ = cli("check", "--db", "bad.db")
    assert code == 1 and "damaged" in out


def test_what_batchlab_changes_in_the_data_is_said_once_and_stored(cli, tmp_path):
    from batchlab.store import Store

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(40, 3)), y=np.array([0, 5, 9, 5] * 10))
    code, out, err = cli("train", "--data", "d.npz", "--batch-size", "8,full", "--epochs", 1, "--hidden", 4)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "5->1" in notes[0]
    with Store(tmp_path / "batchlab.db") as store:
        stored = store.notes()
    assert len(stored) == 2 and all(lines == [notes[0][len("note: "):]] for lines in stored.values())


def test_the_installed_command_exits_at_once_with_its_status_and_all_its_output(tmp_path):
    """``console_main`` skips the interpreter's teardown: piped output must still be complete
    and exit statuses kept (0, 2 for bad input), and exit handlers must still run."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "batchlab.cli", "plan", "--n", "200", "--batch-size", "5",
                           "--epochs", "10"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "40 batches (updates) per epoch, 400 updates, 2,000 samples seen" in " ".join(done.stdout.split())
    bad = subprocess.run([sys.executable, "-m", "batchlab.cli", "runs", "--db", str(tmp_path / "missing" / "x.db")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: folder") and "Traceback" not in bad.stderr
    marker = tmp_path / "exit-handler-ran"
    script = ("import atexit, sys; from pathlib import Path; "
              f"atexit.register(lambda: Path({str(marker)!r}).write_text('yes')); "
              "sys.argv = ['batchlab', 'plan', '--n', '10', '--batch-size', '2', '--epochs', '1']; "
              "from batchlab.cli import console_main; console_main()")
    handled = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert handled.returncode == 0, handled.stderr
    assert marker.read_text() == "yes"
