"""Stability vs batch size: when a run first reaches a threshold, and how much it jitters late."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from batchlab.plots.log_ticks import batch_ticks


def interval_errorbar(ax, x, table: pd.DataFrame, key: str, **style) -> None:
    """Means with their 95% interval (``key``, ``key_low``, ``key_high`` columns) as error bars."""
    mean = table[key].to_numpy(float)
    low = np.nan_to_num(mean - table[f"{key}_low"].to_numpy(float))
    high = np.nan_to_num(table[f"{key}_high"].to_numpy(float) - mean)
    ax.errorbar(x, mean, yerr=[low, high], fmt="o-", ms=4, capsize=3, **style)


def log2_axis(ax, values) -> None:
    """A log-2 x axis with ticks at the given batch sizes, written as plain numbers; a tick
    closer than a factor 1.5 to a larger labelled one (1024 beside a full batch of 1437) keeps
    its mark but not its number, which would overlap. Fewer than three sizes get powers of two
    labelled beside them (``log_ticks.batch_ticks``)."""
    ax.set_xscale("log", base=2)
    ticks = sorted({int(v) for v in values})
    labels, last = [], None
    for t in reversed(ticks):
        near = last is not None and last < 1.5 * t
        labels.append("" if near else str(t))
        last = last if near else t
    batch_ticks(ax.xaxis, ticks, labels[::-1])


def stability_figure(sweep: pd.DataFrame, threshold: float, last_epochs: int, title: str) -> plt.Figure:
    """Left: epoch at which test accuracy first reaches ``threshold`` vs B (seeds that reached
    it; the share that did is written beside each point). Right: late jitter vs B."""
    sweep = sweep.sort_values("batch_size")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    interval_errorbar(left, sweep.batch_size, sweep, "epoch_to_threshold")
    for b, y, share in zip(sweep.batch_size, sweep.epoch_to_threshold, sweep.reached):
        if share < 1:
            left.annotate("never" if share == 0 else f"{share:.0%} reached", (b, y if np.isfinite(y) else 0),
                          fontsize=7, xytext=(3, 3), textcoords="offset points")
    left.set_ylabel(f"first epoch with test acc >= {threshold:.0%}")
    left.set_ylim(bottom=0)  # an epoch is never negative: a t-interval of few seeds can reach below 0
    interval_errorbar(right, sweep.batch_size, sweep, "late_jitter", color="tab:red")
    right.set_ylabel(f"std of epoch-to-epoch change\nof test acc, last {last_epochs} epochs")
    for ax in (left, right):
        log2_axis(ax, sweep.batch_size)
        ax.set_xlabel("batch size B (log scale)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(title + " — mean (jitter: geometric mean) and 95% interval over seeds", fontsize=10)
    fig.tight_layout()
    return fig
