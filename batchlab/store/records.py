"""Arrays <-> SQLite blobs, and stored runs -> pandas DataFrames (the tabular API)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from batchlab.config import flat_settings
from batchlab.results import RunResult


def encode(values: np.ndarray) -> tuple[str, bytes]:
    arr = np.ascontiguousarray(values)
    dtype = "<i8" if arr.dtype.kind in "iub" else "<f8"
    return dtype, arr.astype(dtype).tobytes()


def decode(dtype: str, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(dtype)).copy()


def run_columns(res: RunResult) -> dict:
    """The run's id and every setting of its resolved config, as flat columns
    (:func:`batchlab.config.flat_settings`)."""
    return {"run_id": res.run_id, **flat_settings(res.config)}


def summary_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """One row per run: settings, status, final metrics (of the returned parameters), best epoch,
    updates, samples, times."""
    rows = []
    for res in results:
        h = res.history
        # Final metrics are those of the parameters the run returns: the best epoch's when early
        # stopping restores them (Keras' restore_best_weights), else the last epoch's.
        es = res.config.early_stopping
        last = res.best_epoch if (es is not None and es.restore_best) else -1
        rows.append({
            **run_columns(res), "status": res.status,
            **{k: float(h[k][last]) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            "best_epoch": res.best_epoch, "epochs_done": int(h["epoch"][-1]), "steps": int(h["step"][-1]),
            "samples_seen": int(h["samples_seen"][-1]), "diverged_step": res.diverged_step,
            "train_seconds": res.train_seconds, "compile_seconds": res.compile_seconds,
        })
    return pd.DataFrame(rows)


def series_frame(results: Iterable[RunResult], level: str) -> pd.DataFrame:
    """Per-epoch (``level='epoch'``) or per-step (``'step'``) records of all runs, one row each."""
    frames = []
    for res in results:
        series = res.history if level == "epoch" else res.steps
        if not series or len(next(iter(series.values()))) == 0:
            continue
        rows = len(next(iter(series.values())))
        frames.append(pd.DataFrame({**{k: [v] * rows for k, v in run_columns(res).items()}, **series}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
