"""``batchlab delete``: an empty or too short id is refused, a prefix names one run or none is
deleted, the runs to delete are shown before anything is, and ``--yes`` only skips the question."""

import subprocess
import sys

import pytest
from helpers import small_store

from batchlab.cli.stored import _full_run_ids
from batchlab.errors import BatchlabError
from batchlab.store import Store


def stored_ids(db) -> set[str]:
    with Store(db, create=False) as store:
        return store.run_ids()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "d.db"
    small_store(path)
    return path


@pytest.mark.parametrize("given", ["", "first character"])
def test_an_empty_or_one_character_id_deletes_nothing(db, tmp_path, given):
    before = stored_ids(db)
    given = sorted(before)[0][0] if given == "first character" else given  # a prefix of a stored id
    done = subprocess.run([sys.executable, "-m", "batchlab.cli", "delete", given, "--db", str(db), "--yes"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert stored_ids(db) == before
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    assert lines[0].startswith(f"error: run id {given!r} is too short") and "at least its first 8" in lines[0]
    assert "nothing deleted" in lines[0] and "to delete" not in done.stdout


def test_a_prefix_names_one_run_or_is_refused_naming_how_many():
    stored = {"abcdef0011111111", "abcdef0022222222", "abcdef0033333333", "abcdef0044444444", "ffffffff00000000"}
    assert _full_run_ids(["abcdef002", "ffffffff", "abcdef0044444444"], stored, "d.db") == \
        ["abcdef0022222222", "ffffffff00000000", "abcdef0044444444"]
    with pytest.raises(BatchlabError, match="'abcdef00' starts the ids of 4 runs in d.db .*nothing deleted"):
        _full_run_ids(["abcdef00"], stored, "d.db")
    with pytest.raises(BatchlabError, match="no run in d.db has an id starting with '12345678'; nothing deleted"):
        _full_run_ids(["ffffffff", "12345678"], stored, "d.db")


def test_the_runs_are_shown_before_they_are_deleted_and_filters_narrow_ids(cli, db):
    ids = sorted(stored_ids(db))
    code, out, err = cli("delete", ids[0][:8], "--db", "d.db", "--yes")  # the fixture ``cli`` runs in tmp_path
    assert code == 0, err
    shown, deleted = out.index("1 run(s) to delete from d.db"), out.index("deleted 1 run(s) from d.db")
    assert shown < out.index(ids[0][:8]) < deleted and not any(r[:8] in out for r in ids[1:])
    assert stored_ids(db) == set(ids[1:])
    with Store(db) as store:
        sizes = {r.run_id: r.config.batch_size for r in store.load(steps=False)}
    other = next(b for b in sizes.values() if b != sizes[ids[1]])
    code, out, err = cli("delete", ids[1], "--batch-size", other, "--db", "d.db", "--yes")
    assert code == 2 and "no run in" in err and "nothing deleted" in err
    assert stored_ids(db) == set(ids[1:])
