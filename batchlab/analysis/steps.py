"""Per-step records: thinned for drawing, read at a step or at equal samples seen, their tails
and their spread over seeds; and the norm of a parameter tree.

What the distance and optimizer studies read (Shen, "Effect of batch size on training
dynamics" (2018; ``science.md`` section 3, items 3 and 4)): how far ``||theta_t - theta_0||_2``
gets for each batch size B against epochs, updates and samples seen; how it spreads across
seeds; how heavy-tailed the update sizes ``||theta_{t+1} - theta_t||_2`` are; and where the
weight norm ``||theta_t||_2`` ends.

Per-step frames have one row per update with columns ``run_id``, ``step`` (1, 2, ...),
``epoch`` (the epoch the update belongs to), ``samples_seen`` and the instruments
(``dist_init``, ``update_norm``, ``weight_norm``). Nothing here imports the engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd



def thin_steps(steps: pd.DataFrame, points: int = 150) -> pd.DataFrame:
    """The rows of each run at about ``points`` geometrically spaced steps, plus its first row
    and every epoch's last step (per-step series are long; these are enough to draw them).

    Runs with the same B and epochs keep the same step numbers, so seeds stay aligned.
    """
    keep = []
    for _, run in steps.groupby("run_id", sort=False):
        last = int(run.step.max())
        grid = set(np.unique(np.geomspace(1, last, points).round().astype(int)).tolist())
        grid |= set(run.groupby("epoch").step.max().tolist()) | {int(run.step.min())}
        keep.append(run[run.step.isin(grid)])
    return pd.concat(keep, ignore_index=True) if keep else steps.iloc[:0]


def with_start(steps: pd.DataFrame, values: dict[str, float | pd.Series]) -> pd.DataFrame:
    """Prepend a step-0 row (before any update) to every run: ``values`` gives the metrics
    there, a number for every run (``{"dist_init": 0.0}``) or a Series indexed by run_id;
    the run's settings are copied and its other per-step columns left empty (NaN)."""
    first = steps.sort_values("step").groupby("run_id", sort=False).head(1).copy()
    first[["step", "epoch", "samples_seen"]] = 0
    for name in ("mb_loss", "mb_acc", "grad_norm", "update_norm", "dist_init", "weight_norm", "wall_time"):
        if name in first:
            first[name] = math.nan
    for name, value in values.items():
        first[name] = first.run_id.map(value) if isinstance(value, pd.Series) else value
    return pd.concat([first, steps], ignore_index=True).sort_values(["run_id", "step"], kind="stable")


def at_samples(steps: pd.DataFrame, metric: str, samples: int) -> pd.Series:
    """Per run: ``metric`` after the update at which ``samples_seen`` reaches exactly
    ``samples`` (an epoch's end, ``e * N``, for every B; NaN if the run never gets there)."""
    def value(run: pd.DataFrame) -> float:
        hit = run[run.samples_seen == samples]
        return float(hit[metric].iloc[-1]) if len(hit) else math.nan

    return steps.groupby("run_id", sort=False).apply(value, include_groups=False)


def at_step(steps: pd.DataFrame, metric: str, step: int) -> pd.Series:
    """Per run: ``metric`` after update number ``step`` (NaN if the run stopped before)."""
    def value(run: pd.DataFrame) -> float:
        hit = run[run.step == step]
        return float(hit[metric].iloc[0]) if len(hit) else math.nan

    return steps.groupby("run_id", sort=False).apply(value, include_groups=False)


def tail_ratio(steps: pd.DataFrame, samples: int, quantile: float = 0.95, metric: str = "update_norm"
               ) -> pd.Series:
    """Per run: how heavy the tail of its update sizes is, up to ``samples`` samples seen.

    ``tail = Q_q(u) / Q_0.5(u)`` over the updates ``u_t = ||theta_{t+1} - theta_t||_2`` with
    ``samples_seen <= samples`` (``Q`` a linear-interpolation quantile). It is scale-free
    (the lr cancels) and stays defined with few updates, unlike a kurtosis or a 99th
    percentile of 50 values. 1 means all updates are the same size.
    """
    window = steps[steps.samples_seen <= samples]
    return window.groupby("run_id", sort=False)[metric].apply(
        lambda u: float(np.quantile(u, quantile) / np.quantile(u, 0.5)) if len(u) > 1 else math.nan)


def spread_over_seeds(steps: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """At every epoch's end (equal samples seen for every B: ``samples_seen = epoch * N``),
    the mean, standard deviation (ddof 1) and coefficient of variation over seeds of
    ``metric`` per group ``by``."""
    ends = steps[steps.step == steps.groupby(["run_id", "epoch"]).step.transform("max")]
    table = ends.groupby(by + ["epoch", "samples_seen"])[metric].agg(["mean", "std", "count"]).reset_index()
    table["cv"] = table["std"] / table["mean"]
    return table


def parameter_norm(params) -> float:
    """``||theta||_2`` of a parameter tree (nested dicts/lists/tuples of arrays), all leaves flattened."""
    if isinstance(params, Mapping):
        return math.sqrt(sum(parameter_norm(v) ** 2 for v in params.values()))
    if isinstance(params, (list, tuple)):
        return math.sqrt(sum(parameter_norm(v) ** 2 for v in params))
    arr = np.asarray(params, float)
    return float(np.sqrt(np.sum(arr * arr)))
