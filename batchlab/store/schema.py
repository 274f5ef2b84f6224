"""The store's file format: the tables of a batchlab store, the marks that identify one, and the
additive upgrades from older schemas.

Tables: ``meta`` (marks the file as a batchlab store), ``runs`` (one row per run: its
resolved config as JSON, batchlab version, status, summary numbers and ``notes``: what
batchlab changed in the run's data, as a JSON list of lines), ``series`` (one row per
recorded array: per-epoch or per-step values of one metric, stored as raw little-endian
bytes), ``measurements`` (what checkpoint instruments measured on a run's saved parameters:
a list of records as JSON per instrument and epoch), ``sweeps`` and ``sweep_runs`` (which
runs a named sweep is made of, recorded before any of them trains) and ``studies`` (each
study's settings, version, runs and outputs, so a report can be rebuilt without retraining).
"""

FORMAT = "batchlab-store"
SCHEMA_VERSION = "4"
# Additive upgrades: a store of an older schema gets these statements on first open (a healthy,
# writable one only; a damaged or read-only store is read as it is).
MIGRATIONS = {
    "2": "CREATE TABLE studies (name TEXT PRIMARY KEY, record TEXT NOT NULL);\n"
         "ALTER TABLE runs ADD COLUMN notes TEXT;",
    "3": "ALTER TABLE runs ADD COLUMN notes TEXT;",
}
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
    train_seconds REAL,
    notes TEXT
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
