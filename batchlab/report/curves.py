"""Per-epoch learning curves as compact JSON for the page's interactive charts.

A chart series is one setting (its seeds together): per epoch, the mean over the seeds still
running of each metric, and the updates and samples seen at that epoch, so the page can draw
it against epochs, updates or samples seen. Non-finite values become null (JSON has no NaN);
runs that diverged are counted in the series' label, not drawn to infinity.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.curves import group_columns, group_label

METRICS = ("test_acc", "train_acc", "test_r2", "train_r2", "test_loss", "train_loss")


def _round(values: np.ndarray, digits: int = 5) -> list:
    out = []
    for v in values:
        v = float(v)
        out.append(None if not math.isfinite(v) else float(f"{v:.{digits}g}") if v != int(v) or abs(v) > 1e15
                   else int(v))
    return out


def series(history: pd.DataFrame, summary: pd.DataFrame, label: str) -> dict:
    """One chart series from the per-epoch rows of a setting's runs (all seeds)."""
    metrics = [m for m in METRICS if m in history]
    frame = history[["epoch", "step", "samples_seen", *metrics]].replace([np.inf, -np.inf], np.nan)
    mean = frame.groupby("epoch", sort=True).mean()
    diverged = int((summary.status == "diverged").sum()) if "status" in summary else 0
    runs = len(summary)
    out = {"label": label, "runs": runs, "diverged": diverged, "epoch": _round(mean.index.to_numpy())}
    if diverged == runs:
        steps = summary.diverged_step.dropna()
        out["diverged_step"] = int(steps.min()) if len(steps) else None  # the line ends there: mark it
    for key in ("step", "samples_seen", *metrics):
        out[key] = _round(mean[key].to_numpy())
    return out


def chart_data(history: pd.DataFrame, summary: pd.DataFrame, by: list[str] | None = None,
               prefix: str | None = None) -> dict:
    """Series for every setting in ``history`` (split by ``by``, default the varying settings).

    ``prefix`` names a column (such as a study's ``group``) whose value starts each label;
    within each of its values the series split by the settings that vary there.
    """
    if history.empty:
        return {"series": []}
    out, seen = [], {}
    parts = history.groupby(prefix, sort=False) if prefix else [(None, history)]
    for name, part in parts:
        runs = summary[summary.run_id.isin(part.run_id.unique())]
        if prefix:
            runs = runs[runs[prefix] == name] if prefix in runs else runs
        columns = by or [c for c in group_columns(runs) if c != prefix]
        if prefix and len(runs.drop_duplicates(columns)) <= 1:
            columns = []
        keys = runs.drop_duplicates(columns)[columns].to_dict("records") if columns else [{}]
        for key in keys:
            chosen = runs
            for column, value in key.items():
                chosen = chosen[chosen[column] == value]
            rows = part[part.run_id.isin(chosen.run_id)]
            label = ", ".join(filter(None, [str(name) if prefix else "", group_label(key, columns) if columns else ""]))
            runs_key = frozenset(chosen.run_id)
            if runs_key in seen:  # the same runs under two names (a study's groups may share runs)
                seen[runs_key]["label"] += f" = {label}"
                continue
            seen[runs_key] = series(rows, chosen, label or "all runs")
            out.append(seen[runs_key])
    return {"series": out}
