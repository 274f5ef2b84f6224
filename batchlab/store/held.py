"""Stores held by another process, or left mid-write by one: how long to wait for a lock, who
holds it, and the journal a killed writer leaves behind.

SQLite does not say which process holds a lock. On Linux the kernel lists every POSIX lock in
``/proc/locks`` with the holder's pid and the locked byte range, and SQLite's rollback-journal
locks are byte ranges at fixed offsets (``os_unix.c``): a write lock over the shared range is
EXCLUSIVE (committing), on the pending byte PENDING (waiting for readers to finish), on the
reserved byte RESERVED (a write transaction is open); a read lock over the shared range is
SHARED (reading). Elsewhere, or when the holder is not visible (another machine over a network
file system, another pid namespace), the message says so and names the journal or WAL files
present.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from batchlab.errors import BatchlabError, StoreError

LOCK_TIMEOUT_ENV = "BATCHLAB_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 30.0  # seconds a command waits for a store another process holds

PENDING_BYTE = 0x40000000  # SQLite's lock bytes (os_unix.c): pending, reserved, then 510 shared bytes
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_FIRST = PENDING_BYTE + 2
# Strongest first: what a lock over each byte means to someone who wants the store.
LOCK_KINDS = (("WRITE", SHARED_FIRST, "an exclusive lock (writing: readers and writers wait)"),
              ("WRITE", PENDING_BYTE, "a pending lock (about to write: new readers wait)"),
              ("WRITE", RESERVED_BYTE, "a reserved lock (a write transaction is open: other writers wait)"),
              ("READ", SHARED_FIRST, "a shared lock (reading: writers wait)"))
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # the first 8 bytes of a rollback journal's header


def lock_timeout() -> float:
    """Seconds to wait for a store another process holds: ``BATCHLAB_LOCK_TIMEOUT`` or 30."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:
        raise BatchlabError(f"{LOCK_TIMEOUT_ENV}={text!r}: give the seconds to wait for a locked store, e.g. 30")
    return value


def holders(path: Path) -> dict[int, str]:
    """pid -> the strongest SQLite lock it holds on ``path`` (this process included), from
    ``/proc/locks``; empty where that file does not exist or shows no lock on ``path``."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return {}
    found: dict[int, int] = {}  # pid -> index into LOCK_KINDS
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 4242 fe:00:2296057 1073741825 1073741825" ("->" marks a waiter)
        if len(fields) < 8 or fields[1] != "POSIX" or not fields[5].endswith(f":{inode}"):
            continue
        try:
            pid, start, end = int(fields[4]), int(fields[6]), float("inf") if fields[7] == "EOF" else int(fields[7])
        except ValueError:
            continue
        for index, (mode, byte, _) in enumerate(LOCK_KINDS):
            if fields[3] == mode and start <= byte <= end:
                found[pid] = min(found.get(pid, index), index)
                break
    return {pid: LOCK_KINDS[index][2] for pid, index in sorted(found.items())}


def _command(pid: int) -> str:
    try:
        text = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split())
    except OSError:
        text = ""
    text = text or "?"
    return text if len(text) <= 60 else text[:57] + "..."


def who_holds(path: Path) -> str:
    """Who holds ``path``, as far as can be seen from here, e.g. ``pid 4242 (python train.py)
    holds an exclusive lock (writing: readers and writers wait)``."""
    held = holders(path)
    if held:
        return "; ".join(("this process" if pid == os.getpid() else f"pid {pid} ({_command(pid)})") + f" holds {kind}"
                         for pid, kind in held.items())
    present = [p.name for p in (_journal(path), path.with_name(path.name + "-wal")) if p.exists()]
    return ("the holder is not visible from here (no lock on it in /proc/locks)"
            + (f"; {' and '.join(present)} present: a write is in progress or was interrupted" if present else ""))


def locked(path: Path, waited: float) -> StoreError:
    """The one-line error for a store that stayed locked for ``waited`` seconds."""
    return StoreError(f"{path} is locked: {who_holds(path)}; waited {waited:g} s "
                      f"(set {LOCK_TIMEOUT_ENV} to wait longer, or try again when it is done)")


def waiting(path: Path, timeout: float) -> str:
    """The note a command prints when it starts waiting for a lock."""
    return f"{path} is locked: {who_holds(path)}; waiting up to {timeout:g} s"


def is_busy(exc: sqlite3.DatabaseError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def note(line: str) -> None:
    """One line on stderr for the user of a command (a store it waits for, runs it skips)."""
    print(f"note: {line}", file=sys.stderr, flush=True)


def patiently(conn: sqlite3.Connection, sql: str, path: Path, timeout: float) -> sqlite3.Cursor:
    """Execute ``sql``; when another process holds the store, say who and wait for it up to
    ``timeout`` seconds (then SQLite's "database is locked" is raised). Leaves the connection's
    busy timeout at ``timeout``."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        return conn.execute(sql)
    except sqlite3.OperationalError as exc:
        if not is_busy(exc):
            raise
        note(waiting(path, timeout))
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn.execute(sql)


def _journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def needs_rollback(exc: sqlite3.DatabaseError, path: Path) -> Path | None:
    """The journal of an interrupted write, when ``exc`` is SQLite refusing to read ``path``
    through a read-only connection because that journal must first be rolled back.

    SQLite decides that a journal is *hot* (pager.c, ``hasHotJournal``): it exists, is not empty,
    does not start with a zero byte, and no process holds a reserved or stronger lock on the store
    (a live writer's journal is not hot). A read-only connection cannot roll it back and says
    SQLITE_READONLY_ROLLBACK."""
    journal = _journal(path)
    code = getattr(exc, "sqlite_errorname", "")
    refused = code == "SQLITE_READONLY_ROLLBACK" or "readonly" in str(exc)
    return journal if refused and journal.exists() else None


def journal_header(journal: Path) -> bool:
    """Whether ``journal`` is there and starts with a rollback journal's header."""
    try:
        with open(journal, "rb") as fh:
            return fh.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC
    except OSError:
        return False
