"""The run store: one SQLite file, one transaction per finished cohort.

Tables: ``meta`` (marks the file as a batchlab store), ``runs`` (one row per run: its
resolved config as JSON, batchlab version, status, summary numbers), ``series`` (one
row per recorded array: per-epoch or per-step values of one metric, stored as raw
little-endian bytes) and ``measurements`` (what checkpoint instruments measured on a run's
saved parameters: a list of records as JSON per instrument and epoch), ``sweeps`` and
``sweep_runs`` (which runs a named sweep is made of, recorded before any of them trains) and
``studies`` (each study's settings, version, runs and outputs, so a report can be rebuilt without
retraining). A killed process loses at most the cohort in flight; finished runs are never
touched again unless re-run with ``force``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from batchlab.config import run_config_from_dict
from batchlab.results import RunResult
from batchlab.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "batchlab-store"
SCHEMA_VERSION = "3"
# Additive upgrades: a store of an older schema gets these statements on first open.
MIGRATIONS = {"2": "CREATE TABLE studies (name TEXT PRIMARY KEY, record TEXT NOT NULL);"}
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    version TEXT NOT NULL,
    created REAL NOT NULL,
    best_epoch INTEGER,
    diverged_step INTEGER,
    compile_seconds REAL,
    train_seconds REAL
);
CREATE TABLE series (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    level TEXT NOT NULL,
    name TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, level, name)
);
CREATE TABLE measurements (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    instrument TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    rows TEXT NOT NULL,
    PRIMARY KEY (run_id, instrument, epoch)
);
CREATE TABLE sweeps (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE sweep_runs (sweep TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (sweep, run_id));
CREATE TABLE studies (name TEXT PRIMARY KEY, record TEXT NOT NULL);
"""


class Store:
    """A batchlab SQLite store. ``Store(path)`` opens or creates it; foreign files are refused."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"store path {self.path} is a directory")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists and not create:
            raise StoreError(f"no batchlab store at {self.path}")
        if exists:
            with open(self.path, "rb") as fh:
                if fh.read(16) != SQLITE_MAGIC:
                    raise StoreError(f"{self.path} is not a batchlab store (not an SQLite file); refusing to touch it")
        try:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA foreign_keys = ON")
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                with self._db:
                    self._db.executescript(SCHEMA)
                    self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                         [("format", FORMAT), ("schema_version", SCHEMA_VERSION)])
            else:
                meta = dict(self._db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
                if meta.get("format") != FORMAT:
                    raise StoreError(f"{self.path} is an SQLite database but not a batchlab store; refusing to touch it")
                if meta.get("schema_version") in MIGRATIONS:
                    with self._db:
                        self._db.executescript(MIGRATIONS[meta["schema_version"]])
                        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
                elif meta.get("schema_version") != SCHEMA_VERSION:
                    raise StoreError(f"{self.path} has store schema {meta.get('schema_version')}, "
                                     f"this batchlab reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is corrupt or unreadable as a batchlab store ({exc})") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def write(self, results: Iterable[RunResult], version: str) -> None:
        """Store finished runs in one transaction (replacing earlier records of the same runs)."""
        from batchlab.store.records import encode

        now = time.time()
        with self._db:
            for res in results:
                self._db.execute("DELETE FROM runs WHERE run_id = ?", (res.run_id,))
                self._db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (res.run_id, res.status, json.dumps(res.config.to_dict(), sort_keys=True), version, now,
                     res.best_epoch, res.diverged_step, res.compile_seconds, res.train_seconds))
                rows = [(res.run_id, level, name, *encode(values))
                        for level, series in (("epoch", res.history), ("step", res.steps))
                        for name, values in series.items()]
                self._db.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?)", rows)

    def write_measurements(self, run_id: str, instrument: str, epoch: int, rows: list[dict]) -> None:
        """Store (replace) a checkpoint instrument's records for one run and epoch."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?)",
                             (run_id, instrument, int(epoch), json.dumps(rows, default=float)))

    def write_sweep(self, name: str, spec: dict, run_ids: list[str]) -> None:
        """Record a sweep and the runs it is made of (a sweep of the same name is replaced)."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?)", (name, json.dumps(spec, sort_keys=True)))
            self._db.execute("DELETE FROM sweep_runs WHERE sweep = ?", (name,))
            self._db.executemany("INSERT INTO sweep_runs VALUES (?, ?)", [(name, r) for r in run_ids])

    def write_study(self, name: str, record: dict) -> None:
        """Record (replace) a study's last run: its settings, version, run ids and outputs."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO studies VALUES (?, ?)",
                             (name, json.dumps(record, sort_keys=True, default=str)))

    # ------------------------------------------------------------------ reading

    def studies(self) -> dict[str, dict]:
        """Recorded studies by name (see :meth:`write_study`)."""
        return {name: json.loads(record) for name, record in self._db.execute("SELECT name, record FROM studies")}

    def measured(self, instrument: str) -> set[tuple[str, int]]:
        """(run_id, epoch) pairs that hold records of ``instrument``."""
        return set(self._db.execute("SELECT run_id, epoch FROM measurements WHERE instrument = ?", (instrument,)))

    def sweeps(self) -> dict[str, dict]:
        return {name: json.loads(spec) for name, spec in self._db.execute("SELECT name, spec FROM sweeps")}

    def sweep_run_ids(self, name: str) -> list[str]:
        return [r for (r,) in self._db.execute("SELECT run_id FROM sweep_runs WHERE sweep = ? ORDER BY rowid", (name,))]

    def measurements(self, instrument: str | None = None) -> "pd.DataFrame":
        """Checkpoint measurements as one DataFrame (run_id, instrument, epoch, then the record's keys)."""
        import pandas as pd

        query = "SELECT run_id, instrument, epoch, rows FROM measurements"
        args: tuple = ()
        if instrument is not None:
            query += " WHERE instrument = ?"
            args = (instrument,)
        records = [{"run_id": run_id, "instrument": name, "epoch": epoch, **row}
                   for run_id, name, epoch, rows in self._db.execute(query + " ORDER BY rowid", args)
                   for row in json.loads(rows)]
        return pd.DataFrame(records)

    def run_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT run_id FROM runs")}

    def load(self, run_ids: Iterable[str] | None = None, *, steps: bool = True) -> list[RunResult]:
        """Stored runs as :class:`RunResult` (without parameters), in insertion order."""
        from batchlab.store.records import decode

        rows = list(self._db.execute(
            "SELECT run_id, status, config, best_epoch, diverged_step, compile_seconds, train_seconds, version "
            "FROM runs ORDER BY rowid"))
        wanted = None if run_ids is None else set(run_ids)
        results = []
        for run_id, status, config, best_epoch, diverged_step, compile_s, train_s, version in rows:
            if wanted is not None and run_id not in wanted:
                continue
            levels = ("epoch", "step") if steps else ("epoch",)
            series: dict[str, dict[str, np.ndarray]] = {level: {} for level in ("epoch", "step")}
            query = f"SELECT level, name, dtype, data FROM series WHERE run_id = ? AND level IN ({','.join('?' * len(levels))}) ORDER BY rowid"
            for level, name, dtype, data in self._db.execute(query, (run_id, *levels)):
                series[level][name] = decode(dtype, data)
            cfg = run_config_from_dict(json.loads(config))
            results.append(RunResult(cfg, status, series["epoch"], series["step"], best_epoch, diverged_step,
                                     compile_s or 0.0, train_s or 0.0, version=version))
        return results
