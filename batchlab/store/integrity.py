"""Reading stored runs back whole, and the integrity report of a store file.

A run decodes when its row, its config and every one of its series read and decode
(:func:`decode_run`); a run written by a newer batchlab is neither intact nor damaged
(``versions.py``). :func:`check_integrity` runs SQLite's integrity check through a read-only
connection and lists which runs are intact, so a damaged file is never changed; a journal left
by an interrupted write is rolled back in a copy, never in the store itself.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchlab.results import RunResult
from batchlab.store.held import is_busy, journal_header, lock_timeout, locked, needs_rollback, patiently
from batchlab.store.versions import Newer, NewerRun, describe, stored_config, writer

INTEGRITY_MESSAGES = 5  # how many lines of PRAGMA integrity_check a report keeps


class Damaged(Exception):
    """A stored record that no longer decodes (raised inside reading methods only)."""


def first_line(exc: BaseException, limit: int = 100) -> str:
    """The cause for a one-line message: the first line, without SQLite's echo of undecodable text."""
    text = str(exc).strip()
    line = text.splitlines()[0].split(" with text '")[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def problem_of(rows: list[str]) -> str:
    """The first problem SQLite's quick or integrity check reports, without its report's header."""
    lines = [line for row in rows for line in row.splitlines() if not line.startswith("*** in database")]
    return (lines or rows)[0]


def read_json(text):
    """json.loads of a stored text; a damaged text raises :class:`Damaged`."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise Damaged(f"a stored JSON text does not decode ({first_line(exc)})") from None


@dataclass(frozen=True)
class IntegrityReport:
    """What ``Store.integrity`` found: SQLite's verdict and which runs still read whole.

    ``ok`` is True when ``PRAGMA integrity_check`` passes; ``messages`` are its first lines;
    a run is intact when its row, its config and every one of its series decode; ``newer`` are
    the runs a newer batchlab wrote that this one cannot read (not damage). ``complete`` is False
    when the list of runs itself could not be read to its end. ``notes`` say what else was
    found (a journal an interrupted write left, checked in a rolled-back copy).
    """

    path: Path
    ok: bool
    messages: tuple[str, ...]
    intact: tuple[str, ...]
    damaged: tuple[str, ...]
    complete: bool = True
    newer: tuple[NewerRun, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def sound(self) -> bool:
        """Whether every other command can use the store: SQLite finds no fault and every run
        is either intact or newer (``batchlab check`` exits 0 exactly then)."""
        return self.ok and self.complete and not self.damaged

    def readable(self) -> str:
        """``"12 of 15 runs are readable"`` (or "at least" when the run list is damaged), and how
        many of the others a newer batchlab wrote."""
        total, n = len(self.intact) + len(self.damaged) + len(self.newer), len(self.intact)
        newer = f"; {len(self.newer)} written by {writer(self.newer)}" if self.newer else ""
        if not self.complete:
            return (f"{n} {'run is' if n == 1 else 'runs are'} readable{newer} "
                    f"(the list of runs is damaged, there may be more)")
        return f"{n} of {total} {'run is' if total == 1 else 'runs are'} readable{newer}"

    def newer_line(self) -> str:
        """The newer runs, one phrase (see :func:`batchlab.store.versions.describe`)."""
        return describe(self.newer) if self.newer else ""


def check_integrity(path: str | Path) -> IntegrityReport:
    """Integrity report of the store file at ``path``, read through a read-only connection so
    that a damaged file is never changed (usable when :class:`Store` refuses to open it).

    A store held by another process is waited for (:func:`~batchlab.store.held.lock_timeout`),
    then a StoreError names the holder. A hot journal (a writer stopped mid-transaction) cannot
    be rolled back through a read-only connection: the store and journal are copied to a
    temporary folder, the copy is rolled back and checked, and a note says so."""
    path = Path(path)
    try:
        return _check(path, path.resolve().as_uri() + "?mode=ro")
    except _HotJournal as hot:
        return _check_rolled_back(path, hot.journal)


class _HotJournal(Exception):
    def __init__(self, journal: Path):
        super().__init__(str(journal))
        self.journal = journal


def _check(path: Path, uri: str) -> IntegrityReport:
    timeout = lock_timeout()
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout)
    except sqlite3.DatabaseError as exc:
        return IntegrityReport(path, False, (first_line(exc),), (), (), complete=False)
    try:
        try:
            patiently(conn, "SELECT count(*) FROM sqlite_master", path, timeout).fetchall()
        except sqlite3.DatabaseError as exc:
            if is_busy(exc):
                raise locked(path, timeout) from None
            journal = needs_rollback(exc, path)
            if journal is not None:
                raise _HotJournal(journal) from None
        ok, messages = _integrity_messages(conn)
        ids, complete = _listed_runs(conn)
        verdicts = {r: _verdict(conn, r) for r in ids}
        return IntegrityReport(path, ok, messages, tuple(r for r, v in verdicts.items() if v == "intact"),
                               tuple(r for r, v in verdicts.items() if v == "damaged"), complete,
                               tuple(v for v in verdicts.values() if isinstance(v, NewerRun)))
    finally:
        conn.close()


def _check_rolled_back(path: Path, journal: Path) -> IntegrityReport:
    """The report of a copy of the store with ``journal`` rolled back (the store is not touched)."""
    with tempfile.TemporaryDirectory(prefix="batchlab-check-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(journal, copy.with_name(journal.name))  # first: a writer may roll it back meanwhile
        shutil.copyfile(path, copy)
        try:
            report = _check(copy, copy.resolve().as_uri())  # a writable connection rolls the copy's journal back
        except _HotJournal:
            return IntegrityReport(path, False, (f"an interrupted write left {journal}, and a copy of the store "
                                                 f"could not be rolled back to check it",), (), (), complete=False)
    outcome = ("rolls it back" if journal_header(journal) else
               "deletes it (its header is incomplete: there is nothing to roll back)")
    note = (f"an interrupted write (its process stopped mid-transaction) left {journal}: the next batchlab "
            f"command that opens the store {outcome}; this check read a copy in that state and left the store as it is")
    return dataclasses.replace(report, path=path, notes=(note,))


def _integrity_messages(conn: sqlite3.Connection) -> tuple[bool, tuple[str, ...]]:
    try:
        rows = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({INTEGRITY_MESSAGES})")]
    except sqlite3.DatabaseError as exc:
        return False, (first_line(exc),)
    return rows == ["ok"], tuple(rows)


def _listed_runs(conn: sqlite3.Connection) -> tuple[list[str], bool]:
    """Run ids from the runs table and, as a second path, its primary-key index; False when
    neither could be read to its end."""
    ids: dict[str, None] = {}
    complete = False
    for query in ("SELECT run_id FROM runs ORDER BY rowid",
                  "SELECT run_id FROM runs INDEXED BY sqlite_autoindex_runs_1 ORDER BY run_id"):
        try:
            for (run_id,) in conn.execute(query):
                if isinstance(run_id, str):
                    ids[run_id] = None
            complete = True
        except sqlite3.DatabaseError:
            pass
    return list(ids), complete


def _verdict(conn: sqlite3.Connection, run_id: str) -> str | NewerRun:
    """``"intact"`` when a run's row, config and series all read and decode, the
    :class:`NewerRun` when a newer batchlab wrote it, else ``"damaged"``."""
    try:
        return "intact" if read_run(conn, run_id, steps=True) is not None else "damaged"
    except Newer as exc:
        return exc.run
    except (sqlite3.DatabaseError, Damaged):
        return "damaged"


RUN_COLUMNS = "run_id, status, config, best_epoch, diverged_step, compile_seconds, train_seconds, version"


def decode_run(conn: sqlite3.Connection, row: tuple, steps: bool) -> RunResult:
    """A :class:`RunResult` from its ``runs`` row and its series; :class:`Damaged` when any
    part does not decode, :class:`~batchlab.store.versions.Newer` when a newer batchlab wrote it."""
    from batchlab.store.records import check_run, decode, monitored_of

    run_id, status, config, best_epoch, diverged_step, compile_s, train_s, version = row
    series: dict[str, dict[str, np.ndarray]] = {level: {} for level in ("epoch", "step")}
    try:
        record, monitored = monitored_of(read_json(config), run_id)
        # A monitored run's summary is read from its per-step series: it has no per-epoch ones.
        levels = ("epoch", "step") if steps or monitored is not None else ("epoch",)
        query = (f"SELECT level, name, dtype, data FROM series WHERE run_id = ? "
                 f"AND level IN ({','.join('?' * len(levels))}) ORDER BY rowid")
        for level, name, dtype, data in conn.execute(query, (run_id, *levels)):
            series[level][name] = decode(dtype, data)
        cfg = stored_config(record, run_id, version)
        result = RunResult(cfg, status, series["epoch"], series["step"], best_epoch, diverged_step,
                           compile_s or 0.0, train_s or 0.0, version=version, monitored=monitored)
        if result.run_id != run_id:
            raise ValueError(f"run {run_id}: its stored config belongs to another run")
        check_run(result)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Damaged(first_line(exc)) from None
    return result


def read_run(conn: sqlite3.Connection, run_id: str, steps: bool) -> RunResult | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else decode_run(conn, row, steps)
