"""Figures of the throughput study: samples per second and compile time vs B, and time to a
target vs B with its two factors (updates needed, seconds per update). Read tables only."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from batchlab.plots.critical_batch import plain_log_ticks
from batchlab.plots.log_ticks import batch_axis
from batchlab.plots.stability import interval_errorbar


ERRORBARS = "points: geometric means over seeds; error bars: 95% t-interval on the log scale"


def _plain_log_y(ax) -> None:
    ax.set_yscale("log")
    plain_log_ticks(ax)


def throughput_figure(table: pd.DataFrame, runs: pd.DataFrame, title: str) -> plt.Figure:
    """Left: training samples per second vs B (mean and 95% interval over seeds). Right: compile
    time of each seed's program (dots) and seconds per epoch (mean, 95% interval)."""
    table = table.sort_values("batch_size")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    interval_errorbar(left, table.batch_size, table, "throughput",
                      label="samples / s (geometric mean, 95% CI over seeds)")
    _plain_log_y(left)
    left.set_ylabel("training throughput\n(samples per second, log scale)")
    for i, (seed, group) in enumerate(runs.groupby("seed")):
        right.plot(group.batch_size, group.compile_seconds, "o", ms=4, mfc="none", color="tab:purple",
                   label="compile time of the run's program (one dot per seed)" if i == 0 else None)
    interval_errorbar(right, table.batch_size, table, "seconds_per_epoch", color="tab:green",
                      label="training time per epoch (geometric mean, 95% CI)")
    _plain_log_y(right)
    right.set_ylabel("seconds (log scale)")
    for ax in (left, right):
        batch_axis(ax, table.batch_size)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\nthroughput = samples seen / training seconds (compile excluded; per-epoch evaluation "
                 f"included)\n{ERRORBARS}", fontsize=9)
    fig.tight_layout()
    return fig


def time_to_target_figure(table: pd.DataFrame, fastest: pd.Series, target: str, title: str) -> plt.Figure:
    """Time to ``target`` vs B (mean and 95% interval over the seeds that reached it, fastest B
    marked), and its two factors: updates to the target and seconds per update."""
    table = table.sort_values("batch_size")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    panels = (("seconds_to_target", "seconds to reach the target\n(compile excluded, log scale)", "tab:blue"),
              ("steps_to_target", "updates to reach the target (log scale)", "tab:orange"),
              ("seconds_per_step", "seconds per update (log scale)", "tab:green"))
    for ax, (key, label, colour) in zip(axes, panels):
        interval_errorbar(ax, table.batch_size, table, key, color=colour, label="geometric mean, 95% CI over seeds")
        _plain_log_y(ax)
        ax.set_ylabel(label)
        batch_axis(ax, table.batch_size)
    for b, share, y in zip(table.batch_size, table.reached, table.seconds_to_target):
        if share < 1:
            axes[0].annotate("never" if share == 0 else f"{share:.0%} reached", (b, y if np.isfinite(y) else 1),
                             fontsize=7, xytext=(3, 3), textcoords="offset points", color="tab:red")
    if math.isfinite(fastest.batch_size):
        axes[0].axvline(fastest.batch_size, color="tab:red", ls="--", lw=1,
                        label=f"fastest: B={fastest.batch_size:.0f} ({fastest.stable_share:.0%} of seed resamples)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}\ntime to reach {target} = updates needed x seconds per update\n{ERRORBARS}", fontsize=9)
    fig.tight_layout()
    return fig
