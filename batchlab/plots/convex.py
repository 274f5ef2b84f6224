"""The convex study's views: distance and loss gap to the exact optimum vs B/N, and the noise-ball law."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.plots.log_ticks import readable_log_axis  # noqa: E402

BARS = ("points: geometric means over seeds; bars: 95% t-interval on the log scale (none at B = N: one "
        "deterministic computation)")


def _positive_errorbar(ax, x, table: pd.DataFrame, key: str, **style) -> None:
    """Means with 95% intervals on a log axis: a lower end <= 0 cannot be drawn, so it stops
    at a tenth of the axis' smallest mean instead of vanishing."""
    mean = table[key].to_numpy(float)
    floor = np.nanmin(mean[mean > 0]) / 10 if (mean > 0).any() else 1e-12
    low = np.where(table[f"{key}_low"] > 0, table[f"{key}_low"], floor)
    low = np.nan_to_num(mean - low)
    high = np.nan_to_num(table[f"{key}_high"].to_numpy(float) - mean)
    ax.errorbar(x, mean, yerr=[low, high], **{"fmt": "o", "ls": "-", "ms": 4, "capsize": 3, **style})


def _batch_axis(ax, n: int, sizes) -> None:
    """A top axis naming the batch size B of each measured B/N."""
    top = ax.secondary_xaxis("top", functions=(lambda f: f * n, lambda b: b / n))
    top.set_xticks([int(b) for b in sizes], [str(int(b)) for b in sizes], fontsize=8)
    top.minorticks_off()
    top.set_xlabel("batch size B (samples)", fontsize=8)


def distance_figure(table: pd.DataFrame, last_epochs: int, title: str) -> plt.Figure:
    """Left: mean distance ||Theta - Theta*|| over the last epochs vs B/N; right: the loss gap.

    Both on log-log axes; B = N (full-batch GD) sits at the right end, annotated with its
    value relative to the smallest batch size, because on a log axis "about zero" is only
    visible as a drop of several decades.
    """
    table = table.sort_values("batch_size")
    n = int(round(table.batch_size.iloc[-1] / table.b_over_n.iloc[-1]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    window = f"(mean over the last {last_epochs} epochs)"
    panels = (("distance", "tab:blue", f"distance to the optimum ‖θ − θ*‖\n{window}"),
              ("loss_gap", "tab:red", f"training loss gap L(θ) − L(θ*) (nats)\n{window}"))
    for ax, (key, colour, label) in zip(axes, panels):
        _positive_errorbar(ax, table.b_over_n, table, key, color=colour)
        ax.set_xscale("log")
        ax.set_yscale("log")
        readable_log_axis(ax.xaxis)
        readable_log_axis(ax.yaxis)
        ax.set_xlabel("B / N (fraction of the training set per update, log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        _batch_axis(ax, n, table.batch_size)
        last, first = table.iloc[-1], table.iloc[0]
        if last.batch_size == n:
            text = f"{last[key]:.1e} = {last[key] / first[key]:.1e} × value at B={int(first.batch_size)}"
            ax.annotate(f"B = N (full-batch GD)\n{text}",
                        (last.b_over_n, last[key]), xytext=(-45, 22), textcoords="offset points", ha="right",
                        fontsize=8, arrowprops=dict(arrowstyle="->", lw=0.8))
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, f"points: mean over seeds of each run's mean over its last {last_epochs} epochs; {BARS}",
             ha="center", fontsize=7.5, color="dimgrey")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def noise_law_figure(law: pd.DataFrame, last_epochs: int, title: str, excluded: float | None = None) -> plt.Figure:
    """Mean squared distance E||Theta - Theta*||^2 vs the noise level lr tr(Sigma)/B x (N-B)/(N-1),
    log-log, with the fitted power law (``slope``, ``intercept`` in log2 units) and a slope-1
    reference line through the same centre. B = N has noise level 0 and cannot be drawn."""
    law = law.sort_values("noise_term")
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    mean = law.sq_distance.to_numpy(float)
    bars = [np.nan_to_num(mean - law.sq_distance_low.to_numpy(float)),
            np.nan_to_num(law.sq_distance_high.to_numpy(float) - mean)]
    ax.errorbar(law.noise_term, mean, yerr=bars, fmt="o", ms=4, capsize=3, color="tab:blue", label="measured (per B)")
    for _, row in law.iterrows():
        ax.annotate(f"B={int(row.batch_size)}", (row.noise_term, row.sq_distance), xytext=(6, -10),
                    textcoords="offset points", fontsize=8)
    x = np.geomspace(law.noise_term.min() / 1.5, law.noise_term.max() * 1.5, 50)
    first = law.iloc[0]
    slope, intercept = first.slope, first.intercept
    centre = np.log2(law.noise_term).mean()
    ax.plot(x, 2 ** (intercept + slope * np.log2(x)), color="tab:orange",
            label=f"fitted power law: slope {slope:.2f} [{first.slope_low:.2f}, {first.slope_high:.2f}]")
    ax.plot(x, 2 ** (intercept + slope * centre + (np.log2(x) - centre)), color="grey", ls="--",
            label="slope 1 (SGD with replacement, small lr)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    readable_log_axis(ax.xaxis)
    readable_log_axis(ax.yaxis)
    ax.set_xlabel("noise level lr · tr(Σ*) / B · (N − B)/(N − 1)   (tr(Σ*) at the optimum, log scale)")
    ax.set_ylabel(f"squared distance ‖θ − θ*‖²\n(per run: mean over its last {last_epochs} epochs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title, fontsize=9)
    note = ("points: geometric mean over seeds; bars: its 95% t-interval (on log2 values); "
            "line: least-squares fit to the points,\nslope interval: 95% t with Welch-Satterthwaite degrees of "
            "freedom over seeds")
    if excluded is not None:
        note += f"; B = N has noise level 0 and is not drawn (its squared distance: {excluded:.1e})"
    fig.text(0.5, 0.01, note, ha="center", fontsize=7.5, color="dimgrey")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
