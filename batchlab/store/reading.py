"""What a store is asked: its runs, measurements, sweeps, studies and notes (the queries of
:class:`batchlab.store.Store`). A failed read (SQLite's error, or a record that no longer
decodes) becomes one ``StoreError`` line naming the file and how many runs can still be read;
runs a newer batchlab wrote are skipped with a note (``versions.py``)."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from batchlab.results import RunResult
from batchlab.store.held import note
from batchlab.store.integrity import RUN_COLUMNS, Damaged, decode_run, read_json
from batchlab.store.versions import Newer, NewerRun, describe

if TYPE_CHECKING:
    import pandas as pd


def _reading(method: Callable) -> Callable:
    """Turn SQLite errors and undecodable records met while reading into one StoreError line."""

    @functools.wraps(method)
    def wrapper(self: "StoreReading", *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.DatabaseError, Damaged) as exc:
            raise self._read_error(exc) from None

    return wrapper


class StoreReading:
    """The reading methods of a store; the class that mixes them in opens ``_db`` and says what
    a failed read means (``_read_error``)."""

    _db: sqlite3.Connection
    _read_error: Callable[[BaseException], Exception]
    path: Path
    newer: dict[str, NewerRun]  # runs a newer batchlab wrote, met by load() (they are skipped)

    @_reading
    def studies(self) -> dict[str, dict]:
        """Recorded studies by name (see :meth:`write_study`)."""
        return {name: read_json(record) for name, record in self._db.execute("SELECT name, record FROM studies")}

    @_reading
    def measured(self, instrument: str) -> set[tuple[str, int]]:
        """(run_id, epoch) pairs that hold records of ``instrument``."""
        return set(self._db.execute("SELECT run_id, epoch FROM measurements WHERE instrument = ?", (instrument,)))

    @_reading
    def sweeps(self) -> dict[str, dict]:
        """Recorded sweeps by name: their specs (see :meth:`write_sweep`)."""
        return {name: read_json(spec) for name, spec in self._db.execute("SELECT name, spec FROM sweeps")}

    @_reading
    def sweep_run_ids(self, name: str) -> list[str]:
        """The runs sweep ``name`` is made of, in the order they were recorded."""
        return [r for (r,) in self._db.execute("SELECT run_id FROM sweep_runs WHERE sweep = ? ORDER BY rowid", (name,))]

    @_reading
    def measurements(self, instrument: str | None = None) -> "pd.DataFrame":
        """Checkpoint measurements as one DataFrame (run_id, instrument, epoch, then the record's keys)."""
        import pandas as pd

        query = "SELECT run_id, instrument, epoch, rows FROM measurements"
        args: tuple = ()
        if instrument is not None:
            query += " WHERE instrument = ?"
            args = (instrument,)
        records = []
        for run_id, name, epoch, rows in self._db.execute(query + " ORDER BY rowid", args):
            decoded = read_json(rows)
            if not isinstance(decoded, list) or not all(isinstance(row, dict) for row in decoded):
                raise Damaged(f"the {name} measurements of run {run_id} are not a list of records")
            records += [{"run_id": run_id, "instrument": name, "epoch": epoch, **row} for row in decoded]
        return pd.DataFrame(records)

    @_reading
    def run_ids(self) -> set[str]:
        """Ids of every stored run."""
        return {row[0] for row in self._db.execute("SELECT run_id FROM runs")}

    @_reading
    def notes(self, run_ids: Iterable[str] | None = None) -> dict[str, list[str]]:
        """What batchlab changed in each run's data (see :meth:`write`), by run id: every stored run
        (or those of ``run_ids`` that are stored), an empty list where nothing was changed."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
        query = "SELECT run_id, notes FROM runs" if "notes" in columns else "SELECT run_id, NULL FROM runs"
        wanted = None if run_ids is None else set(run_ids)
        found = {}
        for run_id, text in self._db.execute(query + " ORDER BY rowid"):
            if wanted is None or run_id in wanted:
                lines = [] if text is None else read_json(text)
                if not isinstance(lines, list):
                    raise Damaged(f"the notes of run {run_id} are not a list")
                found[run_id] = [str(line) for line in lines]
        return found

    @_reading
    def load(self, run_ids: Iterable[str] | None = None, *, steps: bool = True) -> list[RunResult]:
        """Stored runs as :class:`RunResult` (without parameters), in insertion order. Runs a
        newer batchlab wrote that this one cannot read are left out, kept in :attr:`newer` and
        named in a note on stderr (once per process)."""
        rows = list(self._db.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY rowid"))
        wanted = None if run_ids is None else set(run_ids)
        results, skipped = [], []
        for row in rows:
            if wanted is None or row[0] in wanted:
                try:
                    results.append(decode_run(self._db, row, steps))
                except Newer as exc:
                    skipped.append(exc.run)
        unnoted = [run for run in skipped if (self.path.resolve(), run.run_id) not in _NOTED]
        if unnoted:
            note(f"{self.path}: {describe(unnoted)}; skipped (read them with that batchlab)")
            _NOTED.update((self.path.resolve(), run.run_id) for run in unnoted)
        self.newer.update((run.run_id, run) for run in skipped)
        return results


# (store, run id) of the newer runs a note has named in this process: a command that reads the
# store several times (a report) names each once.
_NOTED: set[tuple[Path, str]] = set()
