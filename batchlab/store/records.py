"""Arrays <-> SQLite blobs, and stored runs -> pandas DataFrames (the tabular API)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from batchlab.config import eval_names, flat_settings
from batchlab.diagnosis import diagnose
from batchlab.results import DESCRIBED_SETTINGS, MONITORED, Monitored, RunResult

if TYPE_CHECKING:  # pandas is imported where frames are made: storing runs (a sweep) needs none
    import pandas as pd


# Per-epoch series every stored run carries (the summary table is made of them).
SUMMARY_SERIES = ("epoch", "step", "samples_seen")  # and the task's metrics (config.eval_names)
# A monitored run (the user's own loop) has no per-epoch series; per step it always has these.
MONITORED_SERIES = ("step", "samples_seen")


def encode(values: np.ndarray) -> tuple[str, bytes]:
    arr = np.ascontiguousarray(values)
    dtype = "<i8" if arr.dtype.kind in "iub" else "<f8"
    return dtype, arr.astype(dtype).tobytes()


def decode(dtype: str, data: bytes) -> np.ndarray:
    """The array :func:`encode` stored; ValueError when the bytes cannot be one (a damaged store)."""
    if dtype not in ("<i8", "<f8") or not isinstance(data, bytes) or len(data) % 8:
        raise ValueError(f"a stored series is not a whole array of {dtype!r} values")
    return np.frombuffer(data, dtype=np.dtype(dtype)).copy()


def config_record(res: RunResult) -> dict:
    """What the store keeps as a run's config (JSON): its resolved config, and for a monitored run
    also ``kind`` and ``monitor`` (its name and the user's settings). Those two extra keys make
    a batchlab without monitored runs skip the run as one written by a newer batchlab (settings
    it does not know, ``versions.py``) instead of calling it damaged."""
    record = res.config.to_dict()
    if res.monitored is not None:
        record["kind"] = MONITORED
        record["monitor"] = {"name": res.monitored.name, "settings": res.monitored.settings}
    return record


def monitored_of(record: dict, run_id: str) -> tuple[dict, Monitored | None]:
    """The config part of a stored config record and, for a monitored run, what it was given
    (the inverse of :func:`config_record`); ValueError for a kind this version does not know."""
    if not isinstance(record, dict) or "kind" not in record:
        return record, None
    record = dict(record)
    kind, monitor = record.pop("kind"), record.pop("monitor", None)
    if kind != MONITORED or not isinstance(monitor, dict) or not isinstance(monitor.get("settings", {}), dict):
        raise ValueError(f"run {run_id}: a stored run of kind {kind!r} without its monitor record")
    return record, Monitored(run_id, str(monitor.get("name", "")), dict(monitor.get("settings", {})))


def check_run(res: RunResult) -> None:
    """Raise ValueError unless a run read back from a store has what every reader relies on:
    the summary series, equal lengths within each level and whole numbers where counts are
    kept. A store damaged inside a record can pass SQLite's checks and still fail these."""
    for level, series in (("epoch", res.history), ("step", res.steps)):
        lengths = {len(values) for values in series.values()}
        if len(lengths) > 1:
            raise ValueError(f"run {res.run_id}: its per-{level} series differ in length")
    if res.monitored is not None:  # measured per step in the user's loop: no evaluations, no epochs
        missing = [k for k in MONITORED_SERIES if k not in res.steps]
        if missing:
            raise ValueError(f"run {res.run_id}: per-step series {missing} missing")
    else:
        missing = [k for k in SUMMARY_SERIES + eval_names(res.config.data.task) if k not in res.history]
        if missing or len(res.history["epoch"]) == 0:
            raise ValueError(f"run {res.run_id}: per-epoch series {missing or ['epoch']} missing")
    if not isinstance(res.status, str):
        raise ValueError(f"run {res.run_id}: status is not text")
    epochs = len(res.history.get("epoch", ()))
    if res.best_epoch is not None and not (isinstance(res.best_epoch, int) and -epochs <= res.best_epoch < epochs):
        raise ValueError(f"run {res.run_id}: best epoch {res.best_epoch!r} is not one of its epochs")
    if res.diverged_step is not None and not isinstance(res.diverged_step, int):
        raise ValueError(f"run {res.run_id}: diverged step {res.diverged_step!r} is not a number")
    for value in (res.compile_seconds, res.train_seconds):
        if not isinstance(value, (int, float)):
            raise ValueError(f"run {res.run_id}: a stored time is not a number")


def run_columns(res: RunResult) -> dict:
    """The run's id and every setting of its resolved config, as flat columns
    (:func:`batchlab.config.flat_settings`); a monitored run adds ``kind``, ``name`` and each
    of the user's settings that is not a column already (all of them stay in its config)."""
    columns = {"run_id": res.run_id, **flat_settings(res.config)}
    if res.config.devices > 1:  # batch_size is the global batch; each device took this many rows
        columns["per_device_batch"] = res.config.batch_size // res.config.devices
    if res.monitored is not None:
        columns.update(kind=MONITORED, name=res.monitored.name)
        for key, value in res.monitored.settings.items():
            if key not in DESCRIBED_SETTINGS:
                columns.setdefault(key, value if isinstance(value, (int, float, str, bool)) or value is None else str(value))
    return columns


def summary_rows(results: Iterable[RunResult]) -> list[dict]:
    """One dict per run: settings, status, final metrics (of the returned parameters), best
    epoch, updates, samples, times (the rows of :func:`summary_frame`, without pandas)."""
    rows = []
    for res in results:
        if res.monitored is not None:
            rows.append(_monitored_row(res))
            continue
        h = res.history
        # Final metrics are those of the parameters the run returns: the best epoch's when early
        # stopping restores them (Keras' restore_best_weights), else the last epoch's.
        es = res.config.early_stopping
        last = res.best_epoch if (es is not None and es.restore_best) else -1
        rows.append({
            **run_columns(res), "status": res.status,
            **{k: float(h[k][last]) for k in eval_names(res.config.data.task)},
            "best_epoch": res.best_epoch, "epochs_done": int(h["epoch"][-1]), "steps": int(h["step"][-1]),
            "samples_seen": int(h["samples_seen"][-1]), "diverged_step": res.diverged_step,
            "train_seconds": res.train_seconds, "compile_seconds": res.compile_seconds,
            "diagnosis": str(diagnose(h, res.status)),
        })
    return rows


def _monitored_row(res: RunResult) -> dict:
    """A monitored run's summary row: its updates and samples so far, no evaluations (the user's
    loop evaluates on its own; those columns are NaN, never zeros)."""
    s = res.steps
    last = (lambda k: int(s[k][-1]) if len(s.get(k, ())) else 0)
    nan = float("nan")
    return {**run_columns(res), "status": res.status, **{k: nan for k in eval_names(res.config.data.task)},
            "best_epoch": None, "epochs_done": nan, "steps": last("step"), "samples_seen": last("samples_seen"),
            "diverged_step": res.diverged_step, "train_seconds": res.train_seconds,
            "compile_seconds": res.compile_seconds, "diagnosis": "not evaluated"}


def summary_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per run (:func:`summary_rows`) as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(summary_rows(results))


def series_frame(results: Iterable[RunResult], level: str) -> pd.DataFrame:
    """Per-epoch (``level='epoch'``) or per-step (``'step'``) records of all runs, one row each."""
    import pandas as pd

    frames = []
    for res in results:
        series = res.history if level == "epoch" else res.steps
        if not series or len(next(iter(series.values()))) == 0:
            continue
        rows = len(next(iter(series.values())))
        frames.append(pd.DataFrame({**{k: [v] * rows for k, v in run_columns(res).items()}, **series}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
