"""Learning curves: metric vs epoch, train and test lines, one panel per group (batch size,
and lr when several), mean over seeds with a min-max band."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.analysis.curves import group_columns, group_label, seed_band  # noqa: E402

LINES = {"train": "tab:blue", "test": "tab:orange"}


def learning_curves(history: pd.DataFrame, metric: str = "acc", *, x: str = "epoch", ncols: int = 4,
                    title: str | None = None) -> plt.Figure:
    """``metric`` is ``acc`` or ``loss``: draws ``train_<metric>`` and ``test_<metric>`` per panel."""
    by = group_columns(history)
    groups = history[by].drop_duplicates().sort_values(by).to_dict("records")
    ncols = min(ncols, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), sharex=True, sharey=True,
                             squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    n = history.groupby("run_id")["epoch"].size().max()
    for ax, group in zip(axes.flat, groups):
        sel = (history[by] == pd.Series(group)).all(axis=1)
        runs = history[sel]
        for split, colour in LINES.items():
            band = seed_band(runs, f"{split}_{metric}", [], x=x)
            ax.plot(band[x], band["mean"], color=colour, lw=1.2, label=split)
            if band["count"].max() > 1:
                ax.fill_between(band[x], band["min"], band["max"], color=colour, alpha=0.2, lw=0)
        seeds = runs["run_id"].nunique()
        ax.set_title(group_label(group, by) + (f"  ({seeds} seeds)" if seeds > 1 else ""), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(x)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(title or f"Learning curves ({metric}; mean over seeds, band = min..max; {n} records per run)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path) -> list[Path]:
    """Write ``path`` as PNG and SVG; returns the files written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path.with_suffix(".png"), path.with_suffix(".svg")]
    fig.savefig(written[0], dpi=120)
    fig.savefig(written[1])
    plt.close(fig)
    return written
