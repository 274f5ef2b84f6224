"""Damaged, read-only and unwritable stores: every reading path works or says one line, nothing
is written to a damaged file, finished runs are never lost; deleting runs is all or nothing."""

import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

import batchlab
from batchlab.errors import BatchlabError, StoreError
from batchlab.store import Store, check_integrity
from batchlab.store.export import export_store
from batchlab.sweep.spec import SweepSpec
from batchlab.sweep.run import run_sweep

SMALL = dict(batch_size="50,full", epochs=2, lr=0.05, hidden=(4,), seeds=2)
SWEEP = SweepSpec(name="quick", data="blobs", hidden=(4,), batch_sizes="25,full", lr="0.1", seeds=1,
                  budget="epochs=2")
FLIPS = 20  # damaged copies, one per seed


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A real small store (train + sweep + a measurement + a study record) and its runs."""
    db = tmp_path_factory.mktemp("damage") / "batchlab.db"
    batchlab.train("blobs", "mlp", db=db, **SMALL)
    run_sweep(SWEEP, db, executor="local")
    with Store(db) as store:
        ids = [r.run_id for r in store.load()]
        store.write_measurements(ids[0], "probe", 1, [{"value": 1.5}])
        store.write_study("probe", {"settings": {"seeds": 1}, "runs": ids[:2]})
        results = {r.run_id: r for r in store.load()}
    return db, results


def copy_of(made, tmp_path, name="batchlab.db"):
    target = tmp_path / name
    shutil.copyfile(made[0], target)
    return target


def flip(path, seed):
    """XOR 16 bytes (fixed seed): for even seeds at a random offset past the 100-byte file header,
    for odd ones at the start (the b-tree header) of a random page after the first."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    page_size = int.from_bytes(data[16:18], "big")
    if seed % 2:
        offset = page_size * int(rng.integers(1, len(data) // page_size))
    else:
        offset = int(rng.integers(100, len(data) - 16))
    data[offset:offset + 16] = bytes(b ^ 0xFF for b in data[offset:offset + 16])
    path.write_bytes(bytes(data))
    return offset


def one_line_about(exc, path):
    text = str(exc)
    assert "\n" not in text and str(path) in text, text


def every_reading_path(path, out):
    """Call each reading method and export; returns how many raised the one-line error."""
    errors = 0
    try:
        store = Store(path, create=False)
    except StoreError as exc:
        one_line_about(exc, path)
        return 1
    calls = [lambda: store.load(), lambda: store.load(steps=False), store.run_ids, store.measurements,
             lambda: store.measured("probe"), store.sweeps, lambda: store.sweep_run_ids("quick"), store.studies,
             store.notes, lambda: export_store(path, out)]
    with store:
        for call in calls:
            try:
                call()
            except StoreError as exc:
                one_line_about(exc, path)
                errors += 1
    return errors


def test_random_byte_flips_give_results_or_one_line(made, tmp_path, capsys):
    failing = 0
    for seed in range(FLIPS):
        path = copy_of(made, tmp_path, f"flip{seed}.db")
        flip(path, seed)
        damaged = path.read_bytes()
        failing += every_reading_path(path, tmp_path / f"out{seed}") > 0
        for args in (["runs", "--db", path], ["export", "--db", path, "--out", tmp_path / f"cli{seed}"]):
            code, _, err = run_cli(args, capsys)  # anything but BatchlabError would propagate here
            assert code == 0 or (code == 2 and err.startswith("error: ") and err.count("\n") == 1), err
        assert path.read_bytes() == damaged, f"seed {seed}: reading changed the damaged file"
    assert failing >= 3  # the flips do reach SQLite's structures, not only numbers


def damage_page_of(path, run):
    """Break the b-tree page that holds ``run``'s per-epoch train_loss record; returns the page."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    offset = data.find(run.history["train_loss"].astype("<f8").tobytes())
    assert offset > 0
    page = offset // page_size
    data[page * page_size] = 0x00  # not a valid page type
    path.write_bytes(bytes(data))
    return page


def test_a_damaged_page_names_the_readable_runs_and_they_read_whole(made, tmp_path):
    path = copy_of(made, tmp_path)
    results = made[1]
    victim = list(results.values())[1]
    damage_page_of(path, victim)
    before = path.read_bytes()
    with Store(path, create=False) as store:
        report = store.integrity()
        assert not report.ok and report.messages and report.messages != ("ok",)
        assert victim.run_id in report.damaged and report.intact
        assert set(report.intact) | set(report.damaged) == set(results)
        with pytest.raises(StoreError, match=f"{len(report.intact)} of {len(results)} runs are readable") as info:
            store.load()
        assert "batchlab check --db" in str(info.value)
        for back in store.load(report.intact):
            np.testing.assert_array_equal(back.history["test_acc"], results[back.run_id].history["test_acc"])
    assert check_integrity(path) == report
    assert path.read_bytes() == before


def test_cli_on_a_damaged_store_in_a_subprocess_prints_one_line(made, tmp_path):
    path = copy_of(made, tmp_path)
    damage_page_of(path, list(made[1].values())[0])
    before = path.read_bytes()
    for args in (["runs", "--db", str(path)], ["export", "--db", str(path), "--out", str(tmp_path / "out")]):
        proc = subprocess.run([sys.executable, "-m", "batchlab.cli", *args], capture_output=True, text=True,
                              timeout=120)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
        assert "damaged" in proc.stderr and str(path) in proc.stderr
    assert path.read_bytes() == before


def damage_index(path, name):
    """Make the root page of the index ``name`` unreadable (a b-tree header that SQLite rejects)
    while every table, and so every run, still reads whole."""
    with sqlite3.connect(path) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(path.read_bytes())
    start = (page - 1) * page_size
    data[start], data[start + 3:start + 5] = 0x0D, (5).to_bytes(2, "big")  # "a table leaf of 5 cells"
    path.write_bytes(bytes(data))


def test_reading_commands_say_the_store_is_damaged_even_when_every_run_reads(made, tmp_path, capsys):
    healthy, path = copy_of(made, tmp_path, "healthy.db"), copy_of(made, tmp_path)
    damage_index(path, "sqlite_autoindex_meta_1")
    before, runs = path.read_bytes(), len(made[1])
    assert not check_integrity(path).damaged and len(check_integrity(path).intact) == runs
    for command in (["runs"], ["export", "--out", tmp_path / "out"], ["report", "--out", tmp_path / "report"]):
        code, _, said_healthy = run_cli([*command, "--db", healthy], capsys)
        assert code == 0 and "damaged" not in said_healthy, said_healthy
        code, out, err = run_cli([*command, "--db", path], capsys)
        assert code == 0 and out.strip(), err
        # what the healthy copy said (the report names the fixture's unknown study), then one line
        assert err.startswith(said_healthy.replace(str(healthy), str(path))), err
        added = err[len(said_healthy.replace(str(healthy), str(path))):]
        assert added.count("\n") == 1 and added.startswith(f"warning: {path} is damaged (") and \
            f"{runs} of {runs} runs are readable" in added, err
    assert (tmp_path / "out" / "steps.csv").stat().st_size > 0
    assert path.read_bytes() == before


def test_nothing_is_written_to_a_damaged_store(made, tmp_path):
    path = copy_of(made, tmp_path)
    damage_page_of(path, list(made[1].values())[2])
    before = path.read_bytes()
    runs = list(made[1].values())[:1]
    with Store(path) as store:
        for write in (store.check_writable, lambda: store.write(runs, "x"), lambda: store.delete([runs[0].run_id]),
                      lambda: store.write_study("s", {}), lambda: store.write_sweep("s", {}, [])):
            with pytest.raises(StoreError, match="damaged"):
                write()
    assert path.read_bytes() == before


def old_schema(path):
    """Make ``path`` look like a schema-3 store (no notes column)."""
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN notes")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()


def test_a_damaged_old_store_is_read_but_not_upgraded(made, tmp_path):
    path = copy_of(made, tmp_path)
    old_schema(path)
    damage_page_of(path, list(made[1].values())[3])
    before = path.read_bytes()
    with Store(path, create=False) as store:
        assert store.run_ids() == set(made[1])
        assert set(store.notes()) == set(made[1])
    assert path.read_bytes() == before


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(StoreError, match=f"folder {tmp_path / 'nowhere'} does not exist"):
        Store(tmp_path / "nowhere" / "batchlab.db")
    assert not (tmp_path / "nowhere").exists()


def read_only_connection(monkeypatch):
    """Every Store connects read-only, as SQLite does to a file it may not write."""
    monkeypatch.setattr(Store, "_connect", lambda self: sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro",
                                                                        uri=True))


def stored_content(path):
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        content = {t: sorted(conn.execute(f"SELECT * FROM {t}"))
                   for t in ("runs", "series", "measurements", "sweeps", "sweep_runs", "studies")}
    conn.close()
    return content


def test_a_store_that_becomes_read_only_keeps_its_runs_and_says_how_to_resume(made, tmp_path, monkeypatch):
    path = copy_of(made, tmp_path)
    before = stored_content(path)
    extra = batchlab.train("blobs", "mlp", batch_size=100, epochs=1, lr=0.05, hidden=(4,)).runs
    read_only_connection(monkeypatch)
    with Store(path) as store:
        with pytest.raises(StoreError, match="cannot write to store"):
            store.check_writable()
        with pytest.raises(StoreError, match=r"runs stored before are kept: re-run the same command") as info:
            store.write(extra, batchlab.__version__)
        one_line_about(info.value, path)
        with pytest.raises(StoreError, match="nothing was deleted"):
            store.delete(list(made[1]))
    assert stored_content(path) == before


def test_an_immutable_or_read_only_file_and_folder_are_refused_before_any_work(made, tmp_path):
    path = copy_of(made, tmp_path)
    locked = [path, tmp_path]
    try:
        for target in locked:
            if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
                target.chmod(0o555 if target.is_dir() else 0o444)
        with Store(path) as store:
            try:
                store.write_study("probe-write", {})
            except StoreError:
                pass
            else:
                pytest.skip("this user can write through chattr +i and chmod (root without CAP_LINUX_IMMUTABLE)")
        with Store(path) as store, pytest.raises(StoreError, match="cannot write to store"):
            store.check_writable()
        with pytest.raises(StoreError, match="cannot create store"):
            Store(tmp_path / "new.db")
    finally:
        for target in locked:
            subprocess.run(["chattr", "-i", str(target)], capture_output=True)
            target.chmod(0o755 if target.is_dir() else 0o644)


def test_a_writable_store_passes_the_probe_unchanged(made, tmp_path):
    path = copy_of(made, tmp_path)
    before = path.read_bytes()
    with Store(path) as store:
        store.check_writable()
    assert path.read_bytes() == before


def counts(path, run_ids):
    with sqlite3.connect(path) as conn:
        found = {t: conn.execute(f"SELECT count(*) FROM {t} WHERE run_id IN ({','.join('?' * len(run_ids))})",
                                 run_ids).fetchone()[0]
                 for t in ("runs", "series", "measurements", "sweep_runs")}
    conn.close()
    return found


def test_delete_removes_runs_with_everything_they_own(made, tmp_path):
    path = copy_of(made, tmp_path)
    ids = list(made[1])
    sweep_ids = Store(path).sweep_run_ids("quick")
    gone = [ids[0], sweep_ids[0]]  # one with a measurement, one member of the sweep
    assert all(v > 0 for k, v in counts(path, gone).items())
    with Store(path) as store:
        assert store.delete(gone + ["no-such-run"]) == 2
        assert store.run_ids() == set(ids) - set(gone)
        assert sweep_ids[0] not in store.sweep_run_ids("quick")
        kept = store.load()
    assert counts(path, gone) == {"runs": 0, "series": 0, "measurements": 0, "sweep_runs": 0}
    for back in kept:
        np.testing.assert_array_equal(back.steps["mb_loss"], made[1][back.run_id].steps["mb_loss"])


def test_delete_is_all_or_nothing(made, tmp_path):
    path = copy_of(made, tmp_path)
    ids = list(made[1])
    with sqlite3.connect(path) as conn:  # the second run's row refuses to go, after the first is gone
        conn.execute(f"CREATE TRIGGER keep BEFORE DELETE ON runs WHEN old.run_id = '{ids[1]}' "
                     "BEGIN SELECT RAISE(ABORT, 'kept by a trigger'); END")
    conn.close()
    before = stored_content(path)
    with Store(path) as store, pytest.raises(StoreError, match="nothing was deleted"):
        store.delete(ids[:2])
    assert stored_content(path) == before


def test_export_to_a_file_path_is_one_line(made, tmp_path):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(BatchlabError, match="is a file, not a folder"):
        export_store(made[0], tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "mine"


def test_check_of_a_store_with_an_interrupted_write_says_so_and_changes_nothing(tmp_path):
    live, copy = tmp_path / "live.db", tmp_path / "copy.db"
    Store(live).close()
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA cache_size = 1")  # spill to the file: the journal is needed to undo it
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(f"k{i}", "x" * 200) for i in range(2000)])
    shutil.copyfile(live, copy)  # as a killed process leaves it: file and journal mid-transaction
    shutil.copyfile(f"{live}-journal", f"{copy}-journal")
    conn.execute("ROLLBACK")
    conn.close()
    before = copy.read_bytes()
    report = check_integrity(copy)  # checked as the next command finds it: rolled back, sound
    assert report.sound and "interrupted write" in report.notes[0] and "rolls" in report.notes[0]
    assert copy.read_bytes() == before
