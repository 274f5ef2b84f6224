"""What batchlab changes in the user's data is said (Dataset.notes) and stored with each run
(Store.write(..., notes=...), read back with Store.notes), without changing run ids."""

import sqlite3

import numpy as np
import pytest

import batchlab
from batchlab.data import from_arrays, load_dataset, resolve_data_config
from batchlab.store import Store

RNG = np.random.default_rng(0)
X = RNG.normal(size=(80, 3))


def notes_of(*arrays):
    return from_arrays(*arrays)[0].notes


def test_labels_that_are_not_0_to_k_are_renumbered_and_said():
    y = np.repeat([0, 5, 9], [30, 30, 20])
    ds, _ = from_arrays(X, y)
    assert ds.num_classes == 3 and set(np.unique(ds.y_train)) == {0, 1, 2}
    assert ds.notes == ("arrays: labels renumbered 0..2 in sorted order (0->0, 5->1, 9->2)",)
    negative = notes_of(X, np.where(np.arange(80) % 2, 1, -1))
    assert negative == ("arrays: labels renumbered 0..1 in sorted order (-1->0, 1->1)",)


def test_one_hot_labels_one_column_labels_and_images_are_said():
    onehot = np.eye(3, dtype=int)[np.arange(80) % 3]
    ds, _ = from_arrays(X, onehot)
    assert np.array_equal(np.sort(np.concatenate([ds.y_train, ds.y_test])), np.sort(np.arange(80) % 3))
    assert ds.notes == ("arrays: y is one-hot (80 rows x 3 columns): read as class indices 0..2 "
                        "(the column that holds the 1)",)
    column = notes_of(X, (np.arange(80) % 2)[:, None])
    assert column == ("arrays: y has shape (80, 1): read as one label per sample",)
    images = notes_of(RNG.normal(size=(80, 4, 5)), np.arange(80) % 2)
    assert images == ("arrays: x has sample shape (4, 5): mlp/logreg flatten it to 20 features, "
                      "cnn reads it as an image",)


def test_data_that_is_used_as_given_has_no_notes():
    assert notes_of(X, np.arange(80) % 3) == ()
    assert notes_of(X[:60], np.arange(60) % 3, X[60:], np.arange(20) % 3) == ()
    # batchlab's own sets are laid out as documented: digits are 8x8x1 images, said nowhere
    assert load_dataset(resolve_data_config("digits")).notes == ()


def test_a_file_with_odd_labels_says_so_once_with_its_name(tmp_path):
    path = tmp_path / "mine.npz"
    y = np.eye(3)[np.arange(80) % 3] * 1
    np.savez(path, x=X[:60], y=y[:60], x_test=X[60:], y_test=y[60:])
    notes = load_dataset(resolve_data_config(str(path))).notes
    assert [line.split(":")[0] for line in notes] == ["mine.npz", "mine.npz"]
    assert "y is one-hot" in notes[0] and "y_test is one-hot" in notes[1]


def test_standardizing_keeps_the_notes():
    ds, _ = from_arrays(X, np.repeat([2, 4], 40), standardize=True)
    assert ds.notes == ("arrays: labels renumbered 0..1 in sorted order (2->0, 4->1)",)


TRAIN = dict(model="mlp", batch_size=20, epochs=1, lr=0.05, hidden=(4,), seeds=2)


def test_notes_are_stored_with_each_run_and_read_back(tmp_path):
    y = np.repeat([0, 5, 9], [30, 30, 20])
    ds, _ = from_arrays(X, y)
    result = batchlab.train(data=(X, y), **TRAIN)
    ids = [r.run_id for r in result.runs]
    plain = tmp_path / "plain.db"
    with Store(plain) as store:
        store.write(result.runs, batchlab.__version__)
    db = tmp_path / "noted.db"
    with Store(db) as store:
        store.write(result.runs, batchlab.__version__, notes={ids[0]: list(ds.notes)})
        assert store.notes() == {ids[0]: list(ds.notes), ids[1]: []}
        assert store.notes([ids[0], "elsewhere"]) == {ids[0]: list(ds.notes)}
        assert [r.run_id for r in store.load()] == ids  # notes are no part of a run's identity
    with Store(plain) as store:
        assert store.run_ids() == set(ids) and store.notes() == {i: [] for i in ids}
        store.write(result.runs[:1], batchlab.__version__, notes={ids[0]: ["changed"]})
        assert store.notes([ids[0]]) == {ids[0]: ["changed"]}  # a re-written run gets its new notes


@pytest.mark.parametrize("old", ["2", "3"])
def test_an_older_store_gains_the_notes_column(tmp_path, old):
    db = tmp_path / "old.db"
    result = batchlab.train(data=(X, np.arange(80) % 2), **TRAIN)
    with Store(db) as store:
        store.write(result.runs, batchlab.__version__)
    with sqlite3.connect(db) as conn:  # as the previous versions wrote it
        conn.execute("ALTER TABLE runs DROP COLUMN notes")
        if old == "2":
            conn.execute("DROP TABLE studies")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (old,))
    conn.close()
    with Store(db) as store:
        assert store.notes() == {r.run_id: [] for r in result.runs}
        store.write(result.runs, batchlab.__version__, notes={result.runs[1].run_id: ["y squeezed"]})
        assert store.notes()[result.runs[1].run_id] == ["y squeezed"]
        assert len(store.load()) == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    conn.close()


def test_a_sweep_keeps_the_data_notes_as_train_does(tmp_path):
    """Train and sweep store runs by one path: the same run keeps the same notes either way."""
    from batchlab.sweep.run import run_sweep
    from batchlab.sweep.spec import SweepSpec

    path = tmp_path / "onehot.npz"
    y = np.eye(3)[np.arange(80) % 3]
    np.savez(path, x=X[:60], y=y[:60], x_test=X[60:], y_test=y[60:])
    trained = batchlab.train(str(path), batch_size=20, epochs=2, lr=0.05, hidden=(8,), db=tmp_path / "train.db")
    sweep = run_sweep(SweepSpec(data=str(path), batch_size=20, lr=0.05, hidden=(8,), seeds=1, budget="epochs=2"),
                      tmp_path / "sweep.db")
    assert sweep.run_ids == [r.run_id for r in trained.runs]
    with Store(tmp_path / "train.db") as a, Store(tmp_path / "sweep.db") as b:
        notes = a.notes(sweep.run_ids)
        assert notes == b.notes(sweep.run_ids)
        assert all("y is one-hot" in lines[0] for lines in notes.values())
