"""Learning-curve statistics over seeds: bands, epoch-to-threshold, late-epoch variability."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Settings that may differ between the runs of one study; a group is one combination of them.
SETTINGS = ("data", "model", "optimizer", "batch_size", "lr", "momentum", "reduction", "drop_last", "shuffle", "epochs")


def varying_settings(frame: pd.DataFrame) -> list[str]:
    """The settings columns that take more than one value (seeds excluded)."""
    return [c for c in SETTINGS if c in frame and frame[c].nunique() > 1]


def group_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that name a group of seeds: the varying settings, or batch size alone."""
    return varying_settings(frame) or ["batch_size"]


def group_label(row: pd.Series | dict, columns: list[str]) -> str:
    names = {"batch_size": "B", "lr": "lr", "momentum": "momentum"}
    return ", ".join(f"{names.get(c, c)}={row[c]:g}" if isinstance(row[c], float) else f"{names.get(c, c)}={row[c]}"
                     for c in columns)


def seed_band(history: pd.DataFrame, metric: str, by: list[str], x: str = "epoch") -> pd.DataFrame:
    """Mean, std, min, max and number of seeds of ``metric`` per group and ``x`` value."""
    grouped = history.groupby(by + [x])[metric]
    return grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()


def first_reaching(history: pd.DataFrame, metric: str, threshold: float, x: str = "epoch") -> pd.Series:
    """Per run: the first ``x`` at which ``metric >= threshold`` (NaN if never)."""
    def first(run: pd.DataFrame) -> float:
        hit = run.loc[run[metric] >= threshold, x]
        return float(hit.iloc[0]) if len(hit) else np.nan

    return history.sort_values(x).groupby("run_id").apply(first, include_groups=False)


def late_variability(history: pd.DataFrame, metric: str, last: int = 50) -> pd.Series:
    """Per run: std of the epoch-to-epoch change of ``metric`` over its last ``last`` epochs."""
    def spread(run: pd.DataFrame) -> float:
        tail = run.sort_values("epoch")[metric].to_numpy()[-(last + 1):]
        return float(np.std(np.diff(tail))) if len(tail) > 2 else np.nan

    return history.groupby("run_id").apply(spread, include_groups=False)


def per_group(per_run: pd.Series, runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean and std over seeds of a per-run quantity, per group."""
    frame = runs.set_index("run_id")[by].join(per_run.rename("value"))
    return frame.groupby(by)["value"].agg(["mean", "std", "count"]).reset_index()
