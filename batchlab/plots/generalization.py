"""Generalization gap and sharpness vs batch size (tables from ``analysis/generalization.py``)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.plots.log_ticks import batch_ticks, readable_log_axis  # noqa: E402
from batchlab.plots.stability import interval_errorbar  # noqa: E402

# Axis labels (with units) of the sharpness measures the study records.
MEASURE_LABELS = {
    "lambda_max": "Hessian $\\lambda_{max}$ (loss / param$^2$)",
    "hessian_trace": "Hessian trace (Hutchinson, loss / param$^2$)",
    "eps_sharpness": "$\\epsilon$-sharpness (% of 1 + loss)",
    "pool_loss": "loss where sharpness is measured\n(mean cross-entropy, nats)",
}
BANDS = "points: mean over seeds; error bars: 95% t-interval over seeds"


def _batch_axis(ax, table: pd.DataFrame) -> None:
    """log2 batch-size axis with a tick at each B studied, labelled as in the table (full = N)."""
    ax.set_xscale("log", base=2)
    table = table.sort_values("batch_size")
    batch_ticks(ax.xaxis, table.batch_size.to_numpy(float), list(table.label))
    ax.set_xlabel("batch size B (log scale)")
    ax.grid(alpha=0.3)


def accuracy_gap_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    """Left: final train and test accuracy vs B, the best test accuracy starred. Right: the
    accuracy gap (train - test) vs B."""
    table = table.sort_values("batch_size")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = table.batch_size.to_numpy(float)
    interval_errorbar(left, x, table, "train_acc", color="tab:blue", label="train (full pass, eval mode)")
    interval_errorbar(left, x, table, "test_acc", color="tab:orange", label="test")
    best = table.loc[table.test_acc.idxmax()]
    left.plot([best.batch_size], [best.test_acc], marker="*", ms=16, color="tab:red", ls="none",
              label=f"best mean test accuracy (B={best.label})", zorder=5)
    left.set_ylabel("final accuracy (fraction correct)")
    left.legend(fontsize=8, loc="best")
    interval_errorbar(right, x, table, "gap_acc", color="tab:purple", label="gap = train acc − test acc")
    right.axhline(0, color="grey", lw=0.8)
    right.set_ylabel("generalization gap\n(train acc − test acc, fraction)")
    right.legend(fontsize=8, loc="best")
    for ax in (left, right):
        _batch_axis(ax, table)
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, f"{BANDS} ({int(table.seeds.max())} seeds per B); a positive gap means "
             "train accuracy above test accuracy", ha="center", fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def sharpness_figure(table: pd.DataFrame, measures: tuple[str, ...], title: str) -> plt.Figure:
    """One panel per sharpness measure vs B (log y when the values span over a decade), two
    panels to a row: a row of four made the figure 18 inches wide, and the report (or a
    screen) shrank its text to half the size of the other figures'."""
    table = table.sort_values("batch_size")
    ncols = min(len(measures), 2)
    nrows = math.ceil(len(measures) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.7 * nrows + 0.7), squeeze=False)
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, measures):
        interval_errorbar(ax, table.batch_size.to_numpy(float), table, name, color="tab:green")
        values = table[name].to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 10:
            ax.set_yscale("log")
            readable_log_axis(ax.yaxis)
        ax.set_ylabel(MEASURE_LABELS.get(name, name))
        _batch_axis(ax, table)
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, f"{BANDS} ({int(table.seeds.max())} seeds per B); measured on the final parameters",
             ha="center", fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def sharpness_gap_figure(runs: pd.DataFrame, correlations: pd.DataFrame, measures: tuple[str, ...],
                         n_label: dict[int, str], title: str) -> plt.Figure:
    """One scatter per sharpness measure: each run's sharpness (x) against its accuracy gap (y),
    coloured by B, with Spearman's rho over the fitted batch sizes' means and its exact
    permutation p-value in the panel."""
    sizes = sorted(int(b) for b in runs.batch_size.unique())
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(sizes)))
    fig, axes = plt.subplots(1, len(measures), figsize=(4.6 * len(measures), 4.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], measures):
        for b, colour in zip(sizes, colours):
            sel = runs[runs.batch_size == b]
            ax.scatter(sel[name], sel.gap_acc, color=colour, s=28, label=f"B={n_label.get(b, b)}",
                       edgecolor="black", lw=0.4)
        values = runs[name].to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 10:
            ax.set_xscale("log")
            readable_log_axis(ax.xaxis)
        row = correlations.set_index("measure").loc[name]
        p = f", p(ρ > 0) = {row.p_greater:.3f}" if np.isfinite(row.p_greater) else " (no test)"
        ax.set_title(f"Spearman ρ = {row.rho:.2f}{p}\nover {int(row.points)} fitted batch sizes' means",
                     fontsize=9)
        ax.set_xlabel(MEASURE_LABELS.get(name, name))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("generalization gap (train acc − test acc)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, "one point per run (seed × B); ρ: over the batch sizes that fit the training set (means "
             "over seeds), p: exact permutation test",
             ha="center", fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
