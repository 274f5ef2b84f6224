"""Learning-curve statistics over seeds: bands, epoch-to-threshold, late-epoch variability."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab.config import setting_names

# Every setting of the resolved config except the seeds; a group is one combination of them.
SETTINGS = setting_names()


def varying_settings(frame: pd.DataFrame) -> list[str]:
    """The settings columns that take more than one value (seeds excluded)."""
    return [c for c in SETTINGS if c in frame and frame[c].nunique(dropna=False) > 1]


def group_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that name a group of seeds: the varying settings, or batch size alone."""
    return varying_settings(frame) or ["batch_size"]


def group_label(row: pd.Series | dict, columns: list[str]) -> str:
    names = {"batch_size": "B"}
    def name(c: str) -> str:
        return names.get(c, c.rsplit(".", 1)[-1])
    if columns == ["group"]:
        return str(row["group"])
    return ", ".join(f"{name(c)}={row[c]:g}" if isinstance(row[c], float) else f"{name(c)}={row[c]}"
                     for c in columns)


def seed_band(history: pd.DataFrame, metric: str, by: list[str], x: str = "epoch") -> pd.DataFrame:
    """Mean, std, min, max and number of seeds of ``metric`` per group and ``x`` value."""
    grouped = history.groupby(by + [x], dropna=False)[metric]
    return grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()


def per_run_series(history: pd.DataFrame, x: str = "epoch") -> pd.DataFrame:
    """Each run's records once, in order of ``x``. A study's history has one row per group a
    run belongs to (the same settings asked for by two groups): per-run statistics must not
    read such a run's series twice (doubled, its last 50 rows are its last 25 epochs)."""
    return history.drop_duplicates(["run_id", x]).sort_values(["run_id", x], kind="stable")


def first_reaching(history: pd.DataFrame, metric: str, threshold: float, x: str = "epoch") -> pd.Series:
    """Per run: the first ``x`` at which ``metric >= threshold`` (NaN if never)."""
    def first(run: pd.DataFrame) -> float:
        hit = run.loc[run[metric] >= threshold, x]
        return float(hit.iloc[0]) if len(hit) else np.nan

    return per_run_series(history, x).groupby("run_id").apply(first, include_groups=False)


def late_variability(history: pd.DataFrame, metric: str, last: int = 50) -> pd.Series:
    """Per run: std of the epoch-to-epoch change of ``metric`` over its last ``last`` epochs."""
    def spread(run: pd.DataFrame) -> float:
        tail = run[metric].to_numpy()[-(last + 1):]
        return float(np.std(np.diff(tail))) if len(tail) > 2 else np.nan

    return per_run_series(history).groupby("run_id").apply(spread, include_groups=False)


def late_mean(history: pd.DataFrame, metric: str, last: int = 50) -> pd.Series:
    """Per run: mean of ``metric`` over its last ``last`` epochs (where a jittery run ends,
    without the luck of its final epoch)."""
    def mean(run: pd.DataFrame) -> float:
        return float(run[metric].to_numpy()[-last:].mean())

    return per_run_series(history).groupby("run_id").apply(mean, include_groups=False)


def curves_table(history: pd.DataFrame, by: list[str] | None = None, metrics: tuple[str, ...] = ("acc", "loss"),
                 x: str = "epoch") -> pd.DataFrame:
    """Learning curves as data: per group, split (train/test), metric and ``x``, the mean,
    min, max and count over seeds. ``by`` defaults to the settings that vary."""
    by = by or group_columns(history)
    parts = []
    for metric in metrics:
        for split in ("train", "test"):
            band = seed_band(history, f"{split}_{metric}", by, x=x)
            parts.append(band.assign(split=split, metric=metric))
    table = pd.concat(parts, ignore_index=True)
    table["panel"] = [group_label(row, by) for row in table[by].to_dict("records")]
    return table


def fits_by_panel(history: pd.DataFrame, by: list[str] | None = None) -> dict[str, str]:
    """Per panel of :func:`curves_table`: the learning-curve diagnosis of its runs
    (``batchlab/diagnosis.py``), counted, e.g. ``fit: unstable 2/2`` or ``fit: good 1, over@12 1``."""
    from collections import Counter

    from batchlab.diagnosis import diagnose, short

    by = by or group_columns(history)
    out = {}
    for _, group in per_run_series(history).groupby(by, dropna=False, sort=False):
        counts = Counter(short(str(diagnose({c: run[c].to_numpy() for c in ("train_loss", "test_loss", "test_acc")
                                             if c in run}))) for _, run in group.groupby("run_id", sort=False))
        total = sum(counts.values())
        text = ", ".join(f"{label} {n}/{total}" if len(counts) == 1 else f"{label} {n}" for label, n in counts.items())
        out[group_label(group.iloc[0], by)] = f"fit: {text}"
    return out
