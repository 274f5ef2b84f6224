"""The runs table of the command line: one row per run, the settings that differ between the runs
shown, final metrics and per-run seconds, fitted to the terminal (80 columns when output is not a
terminal; columns are dropped in the order of ``_DROP_FIRST``) unless asked for every column."""

from __future__ import annotations

import sys
import textwrap
from collections import Counter

import typer

from batchlab.config import setting_names
from batchlab.diagnosis import short

# Accuracy for classification runs, R^2 for regression runs (a column shows when any run has it).
_METRICS = [("status", "status"), ("fit", "diagnosis"), ("train loss", "train_loss"), ("train acc", "train_acc"), ("train R2", "train_r2"),
            ("test loss", "test_loss"), ("test acc", "test_acc"), ("test R2", "test_r2"), ("best ep", "best_epoch"),
            ("steps", "steps"), ("samples", "samples_seen"), ("s/run", "seconds_per_run")]
_SCORES = ("train_acc", "train_r2", "test_acc", "test_r2")
_DROP_FIRST = ["samples_seen", "steps", "best_epoch", "train_loss", "test_loss", "seconds_per_run", "train_acc",
               "train_r2"]
_SHORT_NAMES = {"batch_size": "B", "momentum": "mom", "optimizer": "opt", "optimizer.nesterov": "nesterov",
                "model.hidden": "hidden", "data.standardize": "std", "early_stopping": "early stop",
                "data.file_sha256": "data sha", "model.fingerprint": "model fp"}
_HASHES = ("data.file_sha256", "model.fingerprint")  # shown by their first 8 characters, like run ids
_LONGEST_CELL = 16  # longer setting values are cut to this many characters (…)
_COHORT_FREE = ("lr", "momentum")  # runs of one cohort differ only in these (and the seeds)
NARROW = 80
SETTINGS = setting_names()  # every setting of a run's config but its seeds


def per_run_seconds(rows: list[dict]) -> list[float]:
    """Each run's share of its cohort's wall time: the runs of a cohort train together as one
    program and all carry the cohort's seconds, so divide by the number of runs sharing them."""
    keys = [c for c in SETTINGS if c not in _COHORT_FREE] + ["train_seconds"]
    cohorts = [tuple(str(row.get(k)) for k in keys) for row in rows]
    sizes = Counter(cohorts)
    return [float(row["train_seconds"]) / sizes[cohort] for row, cohort in zip(rows, cohorts)]


def _distinct(rows: list[dict], key: str) -> int:
    """How many values ``key`` takes over ``rows`` (missing ones, None and NaN count as one)."""
    return len({"-" if _missing(row.get(key)) else repr(row[key]) for row in rows})


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _run_columns(rows: list[dict]) -> list[tuple[str, str]]:
    """(header, key): run id, the settings that differ between the runs (B and lr always), seed, metrics."""
    varying = [c for c in SETTINGS if c not in ("batch_size", "lr") and any(c in row for row in rows)
               and _distinct(rows, c) > 1]
    settings = ["batch_size", "lr"] + varying
    seed = [("seed", "seed")] if _distinct(rows, "seed") > 1 or len(rows) == 1 else []
    metrics = [(h, k) for h, k in _METRICS if k not in _SCORES or any(not _missing(row.get(k)) for row in rows)]
    named = [("name", "name")] if any(isinstance(row.get("name"), str) for row in rows) else []  # monitored runs
    return ([("run", "run_id")] + named + [(_SHORT_NAMES.get(c, c.rsplit(".", 1)[-1]), c) for c in settings]
            + seed + metrics)


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if key == "run_id" or (key in _HASHES and isinstance(value, str)):
        return str(value)[:8]
    if key == "diagnosis" and isinstance(value, str):
        return short(value)  # whole: it is short already, and a cut label would mislead
    if key == "status" and value == "diverged" and not _missing(row.get("diverged_step")):
        return f"diverged@{int(row['diverged_step'])}"
    if _missing(value):
        return "-"
    if key in ("lr", "momentum") or (isinstance(value, float) and key not in (k for _, k in _METRICS)):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    if key == "seconds_per_run":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = str(value)
    return text if len(text) <= _LONGEST_CELL else text[:_LONGEST_CELL - 1] + "…"


def _fit_columns(columns: list[tuple[str, str]], rows: list[list[str]], width: int | None
                 ) -> list[int]:
    """Indices of the columns kept so the table fits ``width`` (None: all); see ``_DROP_FIRST``."""
    keep = list(range(len(columns)))
    if width is None:
        return keep

    def table_width(indices) -> int:
        return 1 + sum(max([len(columns[i][0])] + [len(r[i]) for r in rows]) + 3 for i in indices)

    keys = [k for _, k in columns]
    settings = [k for k in keys if k not in {m for _, m in _METRICS} | {"run_id", "seed", "batch_size", "lr"}]
    order = _DROP_FIRST + settings[::-1] + ["lr"]
    for key in order:
        if table_width(keep) <= width:
            break
        if key in keys:
            keep.remove(keys.index(key))
    return keep


def print_runs(records: list[dict], title: str, wide: bool = False) -> None:
    """The runs table of ``records`` (one dict per run, as ``store.summary_rows`` makes them),
    fitted to the terminal (80 columns when not a terminal) unless ``wide``."""
    from rich.console import Console
    from rich.table import Table

    if records and "seconds_per_run" not in records[0]:
        records = [{**row, "seconds_per_run": s} for row, s in zip(records, per_run_seconds(records))]
    columns = _run_columns(records)
    rows = [[_cell(row, key) for _, key in columns] for row in records]
    console = Console()
    width = None if wide else (console.width if sys.stdout.isatty() else NARROW)
    keep = _fit_columns(columns, rows, width)
    dropped = [columns[i][0] for i in range(len(columns)) if i not in keep]
    table = Table(title=title)
    for i in keep:
        name = columns[i][0]
        table.add_column(name, justify="left" if name in ("run", "status", "data", "model", "opt") else "right")
    for row in rows:
        table.add_row(*[row[i] for i in keep])
    Console(width=width or 10_000).print(table)
    notes = []
    if "s/run" in (columns[i][0] for i in keep):
        notes.append("s/run: the cohort's training seconds / its number of runs (a cohort trains together)")
    if "fit" in (columns[i][0] for i in keep):
        notes.append("fit: what the learning curves say (under-fit, over@EPOCH: over-fit from that epoch, unstable, "
                     "diverged, good): docs/diagnosis.md")
    if dropped:
        notes.append(f"not shown to fit {width} columns: {', '.join(dropped)} (--wide shows all)")
    for note in notes:
        typer.echo(textwrap.fill(note, width=width or NARROW))
