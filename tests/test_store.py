import sqlite3

import numpy as np
import pytest

import batchlab
from batchlab.errors import StoreError
from batchlab.store import Store

SMALL = dict(batch_size="50,full", epochs=2, lr=0.05, hidden=(4,), seeds=2)


def test_runs_round_trip_and_are_not_recomputed(tmp_path):
    db = tmp_path / "runs.db"
    first = batchlab.train("blobs", "mlp", db=db, **SMALL)
    assert first.skipped == []
    with Store(db) as store:
        stored = store.load()
    assert [r.run_id for r in stored] == [r.run_id for r in first.runs]
    for fresh, back in zip(first.runs, stored):
        assert back.config == fresh.config and back.version == batchlab.__version__
        assert back.status == fresh.status and back.best_epoch == fresh.best_epoch
        for key, values in fresh.history.items():
            np.testing.assert_allclose(back.history[key], values, rtol=1e-12)
        for key, values in fresh.steps.items():
            np.testing.assert_allclose(back.steps[key], values, rtol=1e-12)
    second = batchlab.train("blobs", "mlp", db=db, **SMALL)
    assert sorted(second.skipped) == sorted(r.run_id for r in first.runs)
    assert second.history.drop(columns="wall_time").equals(first.history.drop(columns="wall_time"))
    forced = batchlab.train("blobs", "mlp", db=db, force=True, **SMALL)
    assert forced.skipped == []
    with Store(db) as store:
        assert len(store.run_ids()) == 4  # replaced, not duplicated


def test_a_finished_run_is_kept_when_a_later_one_is_added(tmp_path):
    db = tmp_path / "runs.db"
    batchlab.train("blobs", "mlp", db=db, batch_size=50, epochs=1, lr=0.05, hidden=(4,))
    batchlab.train("blobs", "mlp", db=db, batch_size=25, epochs=1, lr=0.05, hidden=(4,))
    with Store(db) as store:
        assert sorted(r.config.batch_size for r in store.load()) == [25, 50]


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    before = db.read_bytes()
    with pytest.raises(StoreError, match="not a batchlab store"):
        Store(db)
    assert db.read_bytes() == before


def test_non_sqlite_file_is_refused_and_untouched(tmp_path):
    db = tmp_path / "notes.db"
    db.write_text("my precious notes")
    with pytest.raises(StoreError, match="not an SQLite file"):
        batchlab.train("blobs", "mlp", db=db, batch_size=50, epochs=1, lr=0.05, hidden=(4,))
    assert db.read_text() == "my precious notes"


def test_corrupt_store_is_refused(tmp_path):
    db = tmp_path / "runs.db"
    batchlab.train("blobs", "mlp", db=db, batch_size=50, epochs=1, lr=0.05, hidden=(4,))
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(StoreError):
        with Store(db) as store:
            store.load()
    assert db.read_bytes() == before


def test_a_study_record_keeps_its_groups_in_the_order_given(tmp_path):
    groups = {"B=32": ["a"], "B=256": ["b"], "B=1024": ["c"]}  # sorted, B=1024 would come first
    with Store(tmp_path / "s.db") as store:
        store.write_study("x", {"groups": groups, "settings": {"seeds": 3, "batch_sizes": [32, 256, 1024]}})
    with Store(tmp_path / "s.db") as store:
        assert list(store.studies()["x"]["groups"]) == ["B=32", "B=256", "B=1024"]
