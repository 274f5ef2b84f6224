"""Figures of an advice: steps to the target vs B with the fitted S(B), the time / samples
trade-off with its Pareto front, and the noise evidence (exact B_simple over the pilot, the
branches' losses). Read the advice's tables only."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from batchlab.plots.critical_batch import plain_log_ticks
from batchlab.plots.log_ticks import batch_axis, readable_log_axis

BARS = "points: geometric means over seeds; bars: 95% t-intervals on the log scale"


def _bars(ax, x, table: pd.DataFrame, key: str, **style) -> None:
    y = table[key].to_numpy(float)
    low = np.clip(y - table[f"{key}_low"].to_numpy(float), 0, None)
    high = np.clip(table[f"{key}_high"].to_numpy(float) - y, 0, None)
    ax.errorbar(x, y, yerr=np.nan_to_num([low, high]), fmt="o", capsize=3, **style)


def scaling_figure(table: pd.DataFrame, chosen: int, b_crit: float, s_min: float, target: str, title: str
                   ) -> plt.Figure:
    """Left: updates to ``target`` vs B at each B's best lr, the fit S(B) = S_min (1 + B_crit/B)
    and perfect scaling from the smallest B. Right: wall time vs samples to the target, one point
    per B, the Pareto front joined, the recommended B ringed."""
    table = table[table.lr.notna()].sort_values("batch_size")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    b = table.batch_size.to_numpy(float)
    _bars(left, b, table, "steps", color="tab:blue", label="updates to the target at the best lr")
    if math.isfinite(b_crit) and math.isfinite(s_min):
        grid = np.geomspace(b.min(), b.max(), 100)
        left.plot(grid, s_min * (1 + b_crit / grid), color="tab:orange",
                  label=f"fit S(B) = S_min (1 + B_crit / B), B_crit = {b_crit:.3g}")
        left.axvline(b_crit, color="tab:orange", ls=":", lw=1)
    if len(b):
        left.plot(b, table.steps.iloc[0] * b[0] / b, color="grey", ls="--", lw=1, label="perfect scaling (steps x 1/B)")
    left.set_yscale("log")
    plain_log_ticks(left)
    left.set_ylabel("updates to the target (log scale)")
    batch_axis(left, table.batch_size)
    left.legend(fontsize=7)
    left.set_title(f"updates to {target}", fontsize=9)

    _time_against_compute(right, table, chosen)
    fig.suptitle(f"{title}\n{BARS}", fontsize=9)
    fig.tight_layout()
    return fig


def _time_against_compute(ax, table: pd.DataFrame, chosen: int) -> None:
    """Wall time vs samples to the target, one point per B, the Pareto front joined, the
    recommended B ringed."""
    front = table[table.pareto].sort_values("samples")
    ax.plot(front.samples, front.seconds, color="tab:green", lw=1, label="Pareto front (no B better in both)")
    ax.plot(table.samples, table.seconds, "o", color="tab:blue", ms=5, label="batch sizes at their best lr")
    for row in table.itertuples():
        ax.annotate(f"B={row.batch_size}", (row.samples, row.seconds), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    pick = table[table.batch_size == chosen]
    ax.plot(pick.samples, pick.seconds, "o", ms=13, mfc="none", mec="tab:red", mew=2, label=f"recommended B={chosen}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax)
    readable_log_axis(ax.xaxis)
    ax.set_xlabel("samples to the target (log scale)")
    ax.set_ylabel("seconds of training steps to the target\n(log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("time against compute", fontsize=9)


def noise_figure(exact: pd.DataFrame, branches: pd.DataFrame, local: dict, title: str) -> plt.Figure:
    """Left: the exact B_simple at the pilot's checkpoints. Right: each branch's smoothed loss
    after the same number of samples against its batch size, the tolerance band above the best
    of the smaller ones, and the local critical batch size."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    if len(exact) and "noise_scale" in exact:
        left.plot(exact.epoch, exact.noise_scale, "o-", color="tab:purple", label="B_simple = tr(Sigma) / |G|^2 (exact)")
        left.set_yscale("log")
        plain_log_ticks(left)
        left.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, "not measured (a model with state)", ha="center", transform=left.transAxes)
    left.xaxis.get_major_locator().set_params(integer=True)
    left.set_xlabel("epoch of the pilot run")
    left.set_ylabel("simple noise scale (samples, log scale)")
    left.grid(alpha=0.3, which="both")
    left.set_title("gradient noise during the pilot", fontsize=9)
    if len(branches):
        sizes = branches.batch_size.to_numpy(float)
        loss = branches.loss.to_numpy(float)
        right.errorbar(sizes, loss, yerr=np.nan_to_num(branches.get("loss_sd", pd.Series(np.nan, branches.index))),
                       fmt="o-", capsize=3, color="tab:blue", label="smoothed training loss (mean, sd over trunks)")
        running = np.minimum.accumulate(np.where(np.isfinite(loss), loss, np.inf))
        right.step(sizes, running * (1 + local["tolerance"]), where="post", color="grey", ls="--", lw=1,
                   label=f"{local['tolerance']:.0%} above the best so far")
        if local.get("value") is not None and math.isfinite(local["value"]):
            right.axvline(local["value"], color="tab:red", ls=":",
                          label=f"local critical batch {'>= ' if local['censored'] else ''}{local['value']:.0f}")
        right.set_yscale("log")
        plain_log_ticks(right)
        batch_axis(right, branches.batch_size)
        right.legend(fontsize=7)
    right.set_ylabel("training loss after the branch (log scale)")
    right.set_title(f"branches from epoch {local.get('epoch')}, {local.get('samples', 0):,} samples each", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
