"""The run store: one SQLite file, one transaction per finished cohort. A killed process
loses at most the cohort in flight; finished runs are never touched again unless re-run
with ``force``.

The file format and its tables are ``schema.py``; the queries are ``reading.py``; opening,
health and writes are here. Damage and faults: every reading method turns an SQLite error (or a record that no longer
decodes) into one :class:`StoreError` line that names the file and how many runs can still be
read; :meth:`Store.integrity` lists them from a read-only connection. Nothing writes to a file
whose ``PRAGMA quick_check`` fails (not even the schema upgrade on open), and a write that fails
because the file became unwritable says that the runs stored so far are kept and how to resume.
A store another process holds is waited for, with a note saying who holds it, up to
``BATCHLAB_LOCK_TIMEOUT`` seconds (30 by default; ``held.py``), then one line says so.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from batchlab.errors import StoreError
from batchlab.profiling import timed
from batchlab.results import RunResult
from batchlab.store.held import is_busy, lock_timeout, locked, patiently
from batchlab.store.integrity import IntegrityReport, check_integrity, first_line, problem_of
from batchlab.store.reading import StoreReading
from batchlab.store.schema import FORMAT, MIGRATIONS, SCHEMA, SCHEMA_VERSION, SQLITE_MAGIC
from batchlab.store.versions import NewerRun

# Files found healthy (path -> (size, mtime_ns)) in this process, so a sweep that opens the store
# once per cohort runs the quick check once, not per cohort.
_HEALTHY: dict[Path, tuple[int, int]] = {}


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Store(StoreReading):
    """A batchlab SQLite store. ``Store(path)`` opens or creates it; foreign files are refused."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = Path(path)
        self._healthy: bool | None = None
        self._problem = ""
        self._timeout = lock_timeout()
        self.newer: dict[str, NewerRun] = {}
        exists = self._check_path(create)
        if exists:
            with open(self.path, "rb") as fh:
                if fh.read(16) != SQLITE_MAGIC:
                    raise StoreError(f"{self.path} is not a batchlab store (not an SQLite file); refusing to touch it")
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot {'open' if exists else 'create'} store {self.path} ({first_line(exc)})"
                             f"{'' if exists else f'; is the folder {self.path.parent} writable?'}") from None
        try:
            self._open(exists)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if is_busy(exc):
                raise locked(self.path, self._timeout) from None
            if not exists:
                raise StoreError(f"cannot create store {self.path} ({first_line(exc)}); "
                                 f"is the folder {self.path.parent} writable?") from None
            raise StoreError(f"{self.path} is corrupt or unreadable as a batchlab store ({first_line(exc)}); "
                             f"run `batchlab check --db {self.path}`") from None
        except StoreError:
            self._db.close()
            raise

    def _check_path(self, create: bool) -> bool:
        """Refuse a folder, a missing folder and (when not creating) a missing file; returns
        whether a non-empty file is there."""
        if self.path.is_dir():
            raise StoreError(f"store path {self.path} is a directory")
        parent = self.path.parent
        if not parent.exists():
            raise StoreError(f"folder {parent} does not exist (store {self.path})")
        if not parent.is_dir():
            raise StoreError(f"{parent} is not a folder (store {self.path})")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if not exists and not create:
            raise StoreError(f"no batchlab store at {self.path}")
        return exists

    def _connect(self) -> sqlite3.Connection:
        """The connection every method uses (tests replace it to simulate a read-only file)."""
        return sqlite3.connect(self.path, timeout=self._timeout)

    def _open(self, exists: bool) -> None:
        """Create the schema in a new file, or check an existing one and upgrade it when healthy."""
        self._db.execute("PRAGMA foreign_keys = ON")
        query = "SELECT name FROM sqlite_master WHERE type='table'"
        tables = {row[0] for row in patiently(self._db, query, self.path, self._timeout)}
        if not tables:
            if exists:
                self._require_healthy()
            with self._db:
                self._db.executescript(SCHEMA)
                self._db.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("format", FORMAT), ("schema_version", SCHEMA_VERSION)])
            return
        meta = dict(self._db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        if meta.get("format") != FORMAT:
            raise StoreError(f"{self.path} is an SQLite database but not a batchlab store; refusing to touch it")
        version = meta.get("schema_version")
        if version in MIGRATIONS:
            self._migrate(version)
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version}, this batchlab reads {SCHEMA_VERSION}")

    def _migrate(self, version: str) -> None:
        """Apply the additive upgrade, only to a healthy file; a read-only one is read as it is."""
        if not self._quick_check():
            return
        try:
            with self._db:
                self._db.executescript(MIGRATIONS[version])
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION,))
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise
            self._db.rollback()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ health

    def integrity(self) -> IntegrityReport:
        """SQLite's integrity check and the runs that still read whole (see :func:`check_integrity`)."""
        return check_integrity(self.path)

    def _quick_check(self) -> bool:
        """Whether ``PRAGMA quick_check`` passes (cached per file state within the process)."""
        if self._healthy is None:
            key = _stat_key(self.path)
            if key is not None and _HEALTHY.get(self.path.resolve()) == key:
                self._healthy = True
                return True
            try:
                rows = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(3)")]
            except sqlite3.DatabaseError as exc:
                if is_busy(exc):
                    raise locked(self.path, self._timeout) from None
                rows = [first_line(exc)]
            self._healthy = rows == ["ok"]
            self._problem = "" if self._healthy else problem_of(rows)
            if self._healthy and key is not None:
                _HEALTHY[self.path.resolve()] = key
        return self._healthy

    def _require_healthy(self) -> None:
        """Refuse to write to a damaged file."""
        if not self._quick_check():
            raise StoreError(f"{self.path} is damaged ({self._problem}): {self.integrity().readable()}; "
                             f"batchlab does not write to a damaged store: use another --db "
                             f"(see `batchlab check --db {self.path}`)")

    def damage_note(self) -> str | None:
        """One line saying the file is damaged (even where every run still reads whole, as with a
        damaged index) and how many runs read whole; None for a healthy file."""
        if self._quick_check():
            return None
        return (f"{self.path} is damaged ({self._problem}): {self.integrity().readable()}; "
                f"run `batchlab check --db {self.path}`")

    def _read_error(self, exc: BaseException) -> StoreError:
        """The one-line error for a read that failed: locked, or damaged with what can still be read."""
        if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
            return locked(self.path, self._timeout)
        return StoreError(f"{self.path} is damaged ({first_line(exc)}): {self.integrity().readable()}; "
                          f"run `batchlab check --db {self.path}`")

    def check_writable(self) -> None:
        """Raise StoreError unless this store can take a write now (a healthy file, writable,
        in a folder where SQLite can create its journal). Call it before any training so that no
        finished work is lost to a store that cannot keep it. Writes nothing: the probe
        transaction is rolled back."""
        self._require_healthy()
        try:
            patiently(self._db, "BEGIN IMMEDIATE", self.path, self._timeout)
            try:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('write-probe', '')")
            finally:
                self._db.rollback()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise locked(self.path, self._timeout) from None
            raise StoreError(f"cannot write to store {self.path} ({first_line(exc)}): make the file and its "
                             f"folder writable, or choose another --db") from None

    @contextmanager
    def _writing(self, failed: Callable[[str], str]) -> Iterator[None]:
        """One transaction on a healthy store; a failure becomes a StoreError whose message
        ``failed(cause)`` says what is kept."""
        self._require_healthy()
        try:
            with self._db:
                yield
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise locked(self.path, self._timeout) from None
            raise StoreError(failed(first_line(exc))) from None
        except sqlite3.IntegrityError as exc:  # a constraint (or a trigger) refused the change
            raise StoreError(failed(first_line(exc))) from None
        except sqlite3.DatabaseError as exc:
            self._healthy, self._problem = False, first_line(exc)
            _HEALTHY.pop(self.path.resolve(), None)
            raise StoreError(f"{self.path} is damaged ({self._problem}); nothing more was written to it; "
                             f"run `batchlab check --db {self.path}`") from None
        key = _stat_key(self.path)
        if key is not None:
            _HEALTHY[self.path.resolve()] = key

    def _stored_count(self) -> str:
        """How many runs the store holds, for a message ("all" when even that cannot be read)."""
        try:
            return str(self._db.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.DatabaseError:
            return "all"

    # ------------------------------------------------------------------ writing

    @timed("store")
    def write(self, results: Iterable[RunResult], version: str, notes: dict[str, list[str]] | None = None) -> None:
        """Store finished runs in one transaction (replacing earlier records of the same runs), with
        ``notes`` (run id -> what batchlab changed in its data; :meth:`notes`). When the file cannot
        be written (read-only, disk full) the runs stored before are kept and the error says to
        re-run the same command, which trains only what is missing."""
        from batchlab.store.records import config_record, encode

        notes = notes or {}
        now = time.time()

        def failed(cause: str) -> str:
            return (f"could not write finished runs to {self.path} ({cause}); the {self._stored_count()} runs "
                    f"stored before are kept: re-run the same command once the store is writable "
                    f"(stored runs are not trained again)")

        with self._writing(failed):
            for res in results:
                self._db.execute("DELETE FROM runs WHERE run_id = ?", (res.run_id,))
                self._db.execute(
                    "INSERT INTO runs (run_id, status, config, version, created, best_epoch, diverged_step, "
                    "compile_seconds, train_seconds, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (res.run_id, res.status, json.dumps(config_record(res), sort_keys=True), version, now,
                     res.best_epoch, res.diverged_step, res.compile_seconds, res.train_seconds,
                     json.dumps(list(notes[res.run_id])) if notes.get(res.run_id) else None))
                rows = [(res.run_id, level, name, *encode(values))
                        for level, series in (("epoch", res.history), ("step", res.steps))
                        for name, values in series.items()]
                self._db.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?)", rows)

    def _unwritten(self, what: str) -> Callable[[str], str]:  # a small write's failure: nothing of it was kept
        return lambda cause: f"could not write {what} to {self.path} ({cause}); the store is unchanged"

    def write_measurements(self, run_id: str, instrument: str, epoch: int, rows: list[dict]) -> None:
        """Store (replace) a checkpoint instrument's records for one run and epoch."""
        with self._writing(self._unwritten(f"{instrument} measurements")):
            self._db.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?)",
                             (run_id, instrument, int(epoch), json.dumps(rows, default=float)))

    def write_sweep(self, name: str, spec: dict, run_ids: list[str]) -> None:
        """Record a sweep and the runs it is made of (a sweep of the same name is replaced)."""
        with self._writing(self._unwritten(f"sweep {name!r}")):
            self._db.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?)", (name, json.dumps(spec, sort_keys=True)))
            self._db.execute("DELETE FROM sweep_runs WHERE sweep = ?", (name,))
            self._db.executemany("INSERT INTO sweep_runs VALUES (?, ?)", [(name, r) for r in run_ids])

    def write_study(self, name: str, record: dict) -> None:
        """Record (replace) a study's last run: its settings, version, run ids and outputs, keys in
        their order (a report analyses the groups as the study drew them; sorted, B=1024 came first)."""
        with self._writing(self._unwritten(f"study {name!r}")):
            self._db.execute("INSERT OR REPLACE INTO studies VALUES (?, ?)", (name, json.dumps(record, default=str)))

    def delete(self, run_ids: Iterable[str]) -> int:
        """Remove runs with their series, measurements and sweep memberships, all in one
        transaction (all or nothing); returns how many runs were removed."""
        ids = [(r,) for r in dict.fromkeys(run_ids)]
        with self._writing(lambda cause: f"could not delete runs from {self.path} ({cause}); nothing was deleted"):
            for table in ("series", "measurements", "sweep_runs"):
                self._db.executemany(f"DELETE FROM {table} WHERE run_id = ?", ids)
            removed = self._db.executemany("DELETE FROM runs WHERE run_id = ?", ids).rowcount
        return max(removed, 0)
