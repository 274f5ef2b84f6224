"""Figures of a batch-size sweep: steps/samples to target vs B, final accuracy and gap vs B,
and the lr x B heatmap. Read DataFrames only."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle
import numpy as np
import pandas as pd

from batchlab.plots.log_ticks import readable_log_axis
from batchlab.plots.stability import log2_axis


def to_target_figure(best: pd.DataFrame, fit, target: str) -> plt.Figure:
    """Steps and samples to the target vs B (log-log) at each B's best lr, with the fit.

    Batch sizes without a best lr (no lr where every seed is usable and ends at the target,
    ``analysis/selection.py``) are not dropped: they are drawn as open triangles at the top edge
    (the legend says what they mean) and named in the title.
    """
    best = best.sort_values("batch_size")
    reached = best[best.lr.notna()]
    missed = best[best.lr.isna()]
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((ax_s, "steps", "steps to target"), (ax_e, "samples", "samples to target")):
        if len(reached):
            ax.errorbar(reached.batch_size, reached[key], yerr=reached[f"{key}_std"].fillna(0), fmt="o", ms=4,
                        capsize=2, label="measured (best lr per B, mean ± std over seeds)")
            _scaling_lines(ax, reached, key, fit)
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            if high < 4 * low:  # one point (or equal ones): give the log axis a readable span
                middle = (low * high) ** 0.5
                ax.set_ylim(middle / 3, middle * 3)
            readable_log_axis(ax.yaxis)  # 100, not 10^2, and at least three of them on a short span
        else:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no batch size reached the target", transform=ax.transAxes, ha="center", fontsize=9)
        if len(missed):
            _not_reached(ax, missed)
        log2_axis(ax, best.batch_size)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        if len(reached) or len(missed):  # where the data are not, below the triangles at the top edge
            ax.legend(fontsize=7, loc="best", bbox_to_anchor=(0, 0, 1, 0.92))
    note = f"; no best lr at B = {', '.join(str(int(b)) for b in missed.batch_size)}" if len(missed) else ""
    fig.suptitle(f"To reach {target}{note}", fontsize=10)
    fig.tight_layout()
    return fig


def _scaling_lines(ax, reached: pd.DataFrame, key: str, fit) -> None:
    """Perfect scaling from the smallest B that reached the target, and the fit if there is one."""
    b = np.geomspace(reached.batch_size.min(), reached.batch_size.max(), 100)
    first = reached.iloc[0]
    if key == "steps":
        ax.plot(b, first.steps * first.batch_size / b, ":", color="grey", label="perfect scaling (S ∝ 1/B)")
    else:
        ax.plot(b, np.full_like(b, first.samples), ":", color="grey", label="perfect scaling (E constant)")
    if fit is not None:
        curve = fit.steps(b) * (1 if key == "steps" else b)
        ax.plot(b, curve, "-", lw=1, label=f"fit: S_min={fit.s_min:.0f}, B_crit={fit.b_crit:.0f}")


def _not_reached(ax, missed: pd.DataFrame) -> None:
    """Open triangles at the top edge (axes coordinates in y) for batch sizes that missed the target."""
    transform = ax.get_xaxis_transform()  # x in data, y in axes fraction
    ax.plot(missed.batch_size, np.full(len(missed), 0.97), "^", mfc="none", color="tab:red", ms=6,
            transform=transform, clip_on=False, label="no lr where every seed is stable and ends at the target")


def final_metrics_figure(best: pd.DataFrame) -> plt.Figure:
    """Final test accuracy and generalization gap vs B at each B's best lr (bands: ± std)."""
    best = best.sort_values("batch_size")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "test_acc", "final test accuracy"), (axes[1], "gap_acc", "train acc - test acc")):
        std = best[f"{key}_std"].fillna(0)
        ax.plot(best.batch_size, best[key], "o-", ms=3)
        ax.fill_between(best.batch_size, best[key] - std, best[key] + std, alpha=0.25, lw=0)
        log2_axis(ax, best.batch_size)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle("At each batch size's best learning rate (line: mean over seeds; band: ± std)", fontsize=10)
    fig.tight_layout()
    return fig


def heatmap_figure(settings: pd.DataFrame, metric: str = "test_acc", best: pd.DataFrame | None = None,
                   title: str | None = None) -> plt.Figure:
    """Mean final ``metric`` over seeds for every learning rate x batch size; each B's chosen lr
    (``best``: batch_size, lr) is outlined, and a choice at the edge of the lr grid is named
    (the optimum may lie outside the grid)."""
    table = settings.pivot_table(index="lr", columns="batch_size", values=metric)
    values = table.to_numpy()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 0.8 * table.shape[1]), 1.8 + 0.5 * table.shape[0]))
    image = ax.imshow(values, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(table.shape[1]), [str(b) for b in table.columns], rotation=45)
    ax.set_yticks(range(table.shape[0]), [f"{lr:g}" for lr in table.index])
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):  # dark text on the bright end of the colour map, white on the dark end
            bright = image.norm(value) > 0.6
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7.5,
                    color="black" if bright else "white")
    edge = []
    if best is not None:
        lrs, sizes = list(table.index), list(table.columns)
        for b, lr in zip(best.batch_size, best.lr):
            if b in sizes and np.isfinite(lr):
                i = int(np.argmin(np.abs(np.log(lrs) - np.log(lr))))
                ax.add_patch(Rectangle((sizes.index(b) - 0.5, i - 0.5), 1, 1, fill=False, lw=2, ec="tab:red"))
                if len(lrs) > 1 and i in (0, len(lrs) - 1):
                    edge.append(str(b))
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate")
    fig.colorbar(image, ax=ax, label=f"final {metric} (mean over seeds)")
    lines = [title or f"Final {metric} for every learning rate and batch size"]
    if best is not None:
        lines.append("red box: the lr chosen for each B" + (
            f"; at the edge of the lr grid for B = {', '.join(edge)} (the best lr may lie outside it)" if edge else ""))
    ax.set_title("\n".join(textwrap.fill(line, 90) for line in lines), fontsize=8.5)
    fig.tight_layout()
    return fig
