"""Distance from the initial weights, its spread, update-size tails and weight norms (Shen 2018).

Figures of the ``distance`` and ``optimizer`` studies. Each function takes the study's
tables (DataFrames) and returns a matplotlib Figure; the caller saves it. Runs are grouped
by a ``group`` label; a ``role`` column says which groups form the batch-size sweep
(``"sweep"``: coloured by B) and which are extra runs (a red, purple... dashed line each).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from batchlab.plots.log_ticks import readable_log_axis  # noqa: E402
from batchlab.plots.stability import interval_errorbar, log2_axis  # noqa: E402

EXTRA = ("tab:red", "tab:purple", "tab:brown", "tab:pink")


def group_styles(frame: pd.DataFrame) -> dict[str, dict]:
    """Line style per group: the sweep from light to dark by B, extra runs dashed in colour."""
    groups = frame.drop_duplicates("group")
    sweep = groups[groups.role == "sweep"].sort_values("batch_size")
    shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(len(sweep), 2)))[::-1]
    styles = {g: dict(color=c, ls="-") for g, c in zip(sweep.group, shades)}
    # Sorted, so that every figure of a study gives a group the same colour.
    extra = groups[groups.role != "sweep"].sort_values(["role", "group"])
    styles |= {g: dict(color=EXTRA[i % len(EXTRA)], ls="--") for i, g in enumerate(extra.group)}
    return styles


def _by_style(frame: pd.DataFrame, styles: dict[str, dict]):
    """The frame's groups in legend order (the sweep by B, then the extra runs)."""
    for group in styles:
        part = frame[frame.group == group]
        if len(part):
            yield group, part


def _band(ax, part: pd.DataFrame, x: str, style: dict, label: str) -> None:
    part = part.sort_values(x)
    ax.plot(part[x], part["mean"], lw=1.4, label=label, **style)
    if part["count"].max() > 1:
        ax.fill_between(part[x], part["min"], part["max"], color=style["color"], alpha=0.15, lw=0)


def _footer(fig: plt.Figure, text: str) -> None:
    fig.text(0.5, 0.01, text, ha="center", fontsize=8, color="dimgrey")


def distance_curves(curves: pd.DataFrame, title: str, fixed_step: int | None = None, note: str = "") -> plt.Figure:
    """||theta_t - theta_0|| against epochs, updates (log axis) and samples seen (log axis):
    one line per group (mean over seeds) with a min..max band over seeds; ``fixed_step``
    marks the update count at which batch sizes are compared, ``note`` goes under the legend."""
    styles = group_styles(curves)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6), sharey=True)
    panels = (("epoch", "epochs (samples seen / N)", False), ("step", "updates (optimizer steps, log scale)", True),
              ("samples_seen", "samples seen (log scale)", True))
    for ax, (x, label, log) in zip(axes, panels):
        for group, part in _by_style(curves, styles):
            part = part[part[x] > 0] if log else part
            _band(ax, part, x, styles[group], group)
        if log:
            ax.set_xscale("log")
            readable_log_axis(ax.xaxis)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both" if not log else "major")
    if fixed_step:
        axes[1].axvline(fixed_step, color="grey", ls=":", lw=1)
        axes[1].annotate(f"S={fixed_step}", (fixed_step, 0.98), xycoords=("data", "axes fraction"), fontsize=8,
                         color="dimgrey", ha="right", va="top", xytext=(-3, 0), textcoords="offset points")
    axes[0].set_ylabel("distance from initial weights\n‖θ_t − θ₀‖₂")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.05))
    fig.suptitle(title, fontsize=10)
    seeds = int(curves["count"].max())
    _footer(fig, f"line: mean over {seeds} seeds; band: min..max over seeds" + (f". {note}" if note else ""))
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def spread_and_tails(spread: pd.DataFrame, sizes: pd.DataFrame, groups: pd.DataFrame, quantile: float,
                     title: str) -> plt.Figure:
    """Left: std over seeds of the distance at each epoch's end (equal samples for every B).
    Middle: distribution of update sizes relative to their run's median (pooled over seeds).
    Right: tail ratio Q_q / median of update sizes per run, mean and 95% interval over seeds."""
    shades = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(groups.batch_size.nunique(), 2)))[::-1]
    colour = dict(zip(sorted(groups.batch_size.unique()), shades))
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(14, 4.4))
    for b, part in spread.groupby("batch_size"):
        part = part.sort_values("samples_seen")
        left.plot(part.samples_seen, part["std"], "o-", ms=3, color=colour[b], label=f"B={b}")
    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    left.set_xlabel("samples seen (at each epoch's end)")
    left.set_ylabel("std over seeds of ‖θ − θ₀‖₂")
    left.set_title("spread of the distance across seeds", fontsize=9)
    for b, part in sizes.groupby("batch_size"):
        centres = np.sqrt(part.low * part.high)
        mid.step(centres, part.density, where="mid", color=colour[b],
                 label=f"B={b} ({int(part.updates.iloc[0]):,} updates)")
    mid.set_xscale("log")
    mid.set_yscale("log")
    readable_log_axis(mid.xaxis)
    readable_log_axis(mid.yaxis)
    mid.set_xlabel("update size / its run's median (log scale)")
    mid.set_ylabel("density (log scale)")
    mid.set_title("distribution of update sizes ‖θₜ₊₁ − θₜ‖", fontsize=9)
    interval_errorbar(right, groups.batch_size, groups, "tail_ratio", color="tab:red")
    log2_axis(right, groups.batch_size)
    right.set_xlabel("batch size B (log scale)")
    right.set_ylabel(f"Q{quantile * 100:g} / median of update sizes")
    right.set_title("tail heaviness (mean and 95% interval over seeds)", fontsize=9)
    for ax in (left, mid, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    mid.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def far_solutions(accuracy: pd.DataFrame, runs: pd.DataFrame, title: str) -> plt.Figure:
    """Left: test accuracy vs epoch per group (mean, min..max band over seeds). Right: each
    run's final test accuracy against its final distance from the initial weights. One legend
    for both, below the panels: inside either it hid a curve or points (the longest run's
    curve ends in the lower right, where a legend would go)."""
    styles = group_styles(runs)
    rows = math.ceil(len(styles) / LEGEND_COLUMNS)
    legend_inches = 0.12 + 0.22 * rows
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8 + legend_inches))
    for group, part in _by_style(accuracy, styles):
        _band(left, part, "epoch", styles[group], group)
    left.set_xlabel("epoch")
    left.set_ylabel("test accuracy")
    left.set_title("test accuracy (line: mean; band: min..max over seeds)", fontsize=9)
    for group, part in _by_style(runs, styles):
        right.scatter(part.dist_final, part.test_acc, label=group, lw=1.2, alpha=0.9, **_point_style(styles[group]))
    right.set_xlabel("final distance from initial weights ‖θ_T − θ₀‖₂")
    right.set_ylabel("final test accuracy")
    right.set_title("each run at its end (one point per seed)", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles = [_legend_entry(group, style) for group, style in styles.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), LEGEND_COLUMNS), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_inches / fig.get_size_inches()[1], 1, 1))
    return fig


LEGEND_COLUMNS = 3


def _point_style(style: dict) -> dict:
    """A run's marker: sweep runs as filled dots, extra runs as hollow diamonds (a sweep point
    under one stays visible)."""
    filled = style["ls"] == "-"
    return dict(marker="o" if filled else "D", s=30 if filled else 46, facecolor=style["color"] if filled else "none",
                edgecolor=style["color"])


def _legend_entry(group: str, style: dict) -> Line2D:
    """The group's line (left panel) with its marker (right panel) on it."""
    point = _point_style(style)
    return Line2D([], [], color=style["color"], ls=style["ls"], lw=1.4, marker=point["marker"], ms=6,
                  mfc=point["facecolor"], mec=point["edgecolor"], label=group)


def optimizer_curves(weights: pd.DataFrame, accuracy: pd.DataFrame, initial: pd.DataFrame, tolerance: float,
                     title: str) -> plt.Figure:
    """Per batch size (columns): top, weight norm ||theta_t||_2 vs epoch with the initial
    norm and its +-tolerance band; bottom, test accuracy vs epoch. One line per ``line``
    label (optimizer and lr; mean over seeds) with a min..max band over seeds."""
    sizes = sorted(weights.batch_size.unique())
    palette = ("tab:orange", "tab:blue", "navy", "tab:green", "tab:purple")
    colours = {line: palette[i % len(palette)] for i, line in enumerate(sorted(weights.line.unique()))}
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.2 * len(sizes), 7.4), sharex="col", sharey="row",
                             squeeze=False)
    for col, b in enumerate(sizes):
        top, bottom = axes[0, col], axes[1, col]
        start = float(initial.loc[initial.batch_size == b, "weight_norm"].mean())
        top.axhspan(start * (1 - tolerance), start * (1 + tolerance), color="grey", alpha=0.12,
                    label=f"initial norm ±{tolerance:.0%}")
        top.axhline(start, color="black", lw=0.8, ls=":", label="initial norm (mean over seeds)")
        for ax, table in ((top, weights), (bottom, accuracy)):
            for line, part in table[table.batch_size == b].groupby("line"):
                _band(ax, part, "epoch", dict(color=colours[line], ls="-"), line)
            ax.grid(alpha=0.3)
        top.set_title(f"B={b}: weight norm", fontsize=9)
        bottom.set_title(f"B={b}: test accuracy", fontsize=9)
        bottom.set_xlabel("epochs (samples seen / N)")
    axes[0, 0].set_ylabel("weight norm ‖θ_t‖₂")
    axes[1, 0].set_ylabel("test accuracy")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 5), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.03))
    fig.suptitle(title, fontsize=10)
    seeds = int(weights["count"].max())
    _footer(fig, f"line: mean over {seeds} seeds; band: min..max over seeds")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
