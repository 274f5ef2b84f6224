"""Views of the epochs study: learning curves with the best and early-stop epochs marked, and
what early stopping saves and costs per batch size."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.plots.learning_curves import LINES  # noqa: E402
from batchlab.plots.log_ticks import batch_ticks, readable_log_axis  # noqa: E402
from batchlab.plots.stability import interval_errorbar  # noqa: E402

BEST, STOP = "tab:green", "tab:red"


def marked_curves(curves: pd.DataFrame, marks: pd.DataFrame, title: str) -> plt.Figure:
    """One column per batch size, loss (top, log scale) and accuracy (bottom) vs epoch: train
    and test means over seeds with min..max bands; a solid green line at the mean
    best-validation epoch and a dashed red line at the mean early-stop epoch, each with its
    min..max over seeds shaded.

    ``curves`` is a :func:`batchlab.analysis.curves.curves_table` by ``batch_size``;
    ``marks`` has, per ``batch_size``, ``best_epoch``/``stop_epoch`` and their ``_min``/``_max``.
    Each panel has its own loss range, so every test-loss minimum stays visible (the
    budget figure compares the losses across B on one axis).
    """
    sizes = sorted(int(b) for b in curves.batch_size.unique())
    fig, axes = plt.subplots(2, len(sizes), figsize=(3.7 * len(sizes) + 0.6, 6.4), sharex=True, squeeze=False)
    for col, b in enumerate(sizes):
        mark = marks[marks.batch_size == b].iloc[0]
        for row, metric in enumerate(("loss", "acc")):
            ax = axes[row, col]
            sel = curves[(curves.batch_size == b) & (curves.metric == metric)]
            for split, colour in LINES.items():
                band = sel[sel.split == split].sort_values("epoch")
                ax.plot(band.epoch, band["mean"], color=colour, lw=1.2, label=f"{split} (full budget)")
                ax.fill_between(band.epoch, band["min"], band["max"], color=colour, alpha=0.2, lw=0)
            _mark(ax, mark, "best_epoch", BEST, "-", "best epoch (min test loss)")
            _mark(ax, mark, "stop_epoch", STOP, "--", "early stop epoch")
            ax.grid(alpha=0.3)
            if metric == "loss":
                _plain_log_axis(ax)
                ax.set_title(f"B={b}  ({int(sel['count'].max())} seeds)", fontsize=9)
        axes[1, col].set_xlabel("epoch (passes over the training set)")
    axes[0, 0].set_ylabel("cross-entropy loss (log scale)")
    axes[1, 0].set_ylabel("accuracy (fraction correct)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.03))
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.005, "curves: mean over seeds of the full-budget runs, band min..max; vertical lines: mean "
             "over seeds, shade min..max over seeds", ha="center", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def _plain_log_axis(ax) -> None:
    """Log y axis labelled with plain numbers (0.01, 0.3, 2), at least three whatever its span."""
    ax.set_yscale("log")
    readable_log_axis(ax.yaxis)


def _mark(ax, mark: pd.Series, key: str, colour: str, style: str, label: str) -> None:
    ax.axvline(mark[key], color=colour, ls=style, lw=1.1, label=label)
    ax.axvspan(mark[f"{key}_min"], mark[f"{key}_max"], color=colour, alpha=0.1, lw=0)


def budget_figure(table: pd.DataFrame, band: float, title: str) -> plt.Figure:
    """Per batch size (log2 axis), mean and 95% interval over seeds of: (a) the best-validation
    and early-stop epochs against the budget; (b) the updates made by then; (c) the paired
    test-accuracy change of stopping early (restored best minus full budget), with the
    +-``band`` region the claim allows; (d) the full run's test loss at its best and last epoch."""
    table = table.sort_values("batch_size")
    x = table.batch_size.to_numpy(float)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2))
    (a, b), (c, d) = axes
    _timing_panels(a, b, x, table)
    _cost_panels(c, d, x, table, band)
    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        batch_ticks(ax.xaxis, x)
        ax.set_xlabel("batch size B (samples per update, log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title + "\nmarkers: mean over seeds; error bars: 95% t-interval over seeds "
                 "(paired by seed in (c))", fontsize=10)
    fig.tight_layout()
    return fig


def _timing_panels(a: plt.Axes, b: plt.Axes, x, table: pd.DataFrame) -> None:
    """(a) the best and early-stop epochs against the budget; (b) the updates made by then."""
    interval_errorbar(a, x, table, "best_epoch", color=BEST, label="best-validation epoch (full budget)")
    interval_errorbar(a, x, table, "stop_epoch", color=STOP, label="early stop epoch")
    a.plot(x, table.budget, color="grey", ls=":", label="epoch budget")
    a.set_ylabel("epoch")
    a.set_ylim(bottom=0)  # an epoch is never negative: a t-interval of 2 seeds can reach below 0
    a.set_title("(a) when: best epoch and early-stop epoch", fontsize=9)
    interval_errorbar(b, x, table, "best_updates", color=BEST, label="updates to the best epoch")
    interval_errorbar(b, x, table, "early_updates", color=STOP, label="updates with early stopping")
    b.plot(x, table.full_updates, color="grey", ls=":", marker="s", ms=3, label="updates of the full budget")
    b.set_yscale("log")
    readable_log_axis(b.yaxis)
    b.set_ylabel("optimizer updates (log scale)")
    b.set_title("(b) updates made (saved = grey - red)", fontsize=9)


def _cost_panels(c: plt.Axes, d: plt.Axes, x, table: pd.DataFrame, band: float) -> None:
    """(c) the paired accuracy change of stopping early, in the claim's band; (d) the test loss
    at the best and the last epoch."""
    c.axhspan(-100 * band, 100 * band, color="grey", alpha=0.15, lw=0,
              label=f"claim: within \u00b1{100 * band:g} point")
    c.axhline(0, color="grey", lw=0.8)
    scaled = table.assign(**{k: 100 * table[k] for k in ("acc_change", "acc_change_low", "acc_change_high")})
    interval_errorbar(c, x, scaled, "acc_change", color="tab:purple",
                      label="restored best epoch - full budget (paired)")
    c.set_ylabel("test accuracy change (percentage points)")
    c.set_title("(c) accuracy lost (<0) or gained (>0) by stopping early", fontsize=9)
    interval_errorbar(d, x, table, "full_min_loss", color=BEST, label="at the best epoch")
    interval_errorbar(d, x, table, "full_last_loss", color="tab:orange", label="at the last epoch")
    d.set_ylabel("test cross-entropy loss")
    d.set_title("(d) overfitting: test loss, best vs last epoch", fontsize=9)


__all__ = ["marked_curves", "budget_figure"]
