"""Large-batch recovery: test-accuracy curves of every group on shared axes, and the final test
accuracy of each group with its 95% interval next to the small-batch baseline's."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.plots.log_ticks import readable_log_axis  # noqa: E402

COLOURS = ("black", "tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")
STYLES = ("-", "-", "--", "-.", ":", "-")


def accuracy_curves(curves: pd.DataFrame, switch_epoch: int | None, title: str,
                         zoom_from: float = 0.5) -> plt.Figure:
    """Test accuracy vs epoch, one line per group (mean over seeds) with a min..max band.

    ``curves`` is a :func:`batchlab.analysis.curves.curves_table` grouped by ``group`` (in the
    order to draw). Left: test accuracy over every epoch. Right: test error (100 - accuracy,
    log scale) from ``zoom_from`` x the last epoch on, where the final differences are a
    point or two and a log axis keeps them apart without hiding the far-behind groups.
    """
    test = curves[(curves.split == "test") & (curves.metric == "acc")]
    groups = list(dict.fromkeys(test.group))
    last = int(test.epoch.max())
    start = int(np.floor(last * zoom_from))
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(12, 5.4))
    for i, group in enumerate(groups):
        band = test[test.group == group].sort_values("epoch")
        style = dict(color=COLOURS[i % len(COLOURS)], ls=STYLES[i % len(STYLES)], lw=1.4)
        full.plot(band.epoch, 100 * band["mean"], label=group, **style)
        full.fill_between(band.epoch, 100 * band["min"], 100 * band["max"], color=style["color"], alpha=0.12, lw=0)
        tail = band[band.epoch >= start]
        zoom.plot(tail.epoch, 100 * (1 - tail["mean"]), **style)
        zoom.fill_between(tail.epoch, 100 * (1 - tail["max"]), 100 * (1 - tail["min"]), color=style["color"],
                          alpha=0.12, lw=0)
    zoom.set_yscale("log")
    readable_log_axis(zoom.yaxis)  # a span under a decade still gets three or more labels
    zoom.set_xlim(start, last)
    full.set_ylabel("test accuracy (%)")
    zoom.set_ylabel("test error = 100 - accuracy (%, log scale)")
    full.set_title("test accuracy, all epochs", fontsize=9)
    zoom.set_title(f"test error, epochs {start}..{last} (lower is better)", fontsize=9)
    for ax in (full, zoom):
        if switch_epoch is not None and (ax is full or start < switch_epoch < last):
            ax.axvline(switch_epoch, color="grey", lw=0.8, ls=":")
            ax.annotate(f"batch switch\n(after epoch {switch_epoch})", (switch_epoch, 0.6),
                        xycoords=("data", "axes fraction"), fontsize=7, color="grey", va="top",
                        xytext=(3, 0), textcoords="offset points")
        ax.set_xlabel("epoch (full passes over the training set)")
        ax.grid(alpha=0.3, which="both")
        ax.xaxis.get_major_locator().set_params(integer=True)
    _legend_below(fig, full, title)
    return fig


def _legend_below(fig: plt.Figure, ax: plt.Axes, title: str) -> None:
    """The curves' legend below both panels (inside the left one it covered the slowest, lowest
    curve), the title above, how to read the bands at the foot."""
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.04))
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, "line: mean over seeds; band: min..max over seeds", ha="center", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.15, 1, 1))


def final_accuracy(final: pd.DataFrame, margin: float, title: str) -> plt.Figure:
    """Left: final test accuracy per group, mean and 95% t-interval over seeds, with the
    baseline's interval as a grey band. Right: each group's difference from the baseline,
    mean and Welch 95% interval, against 0 and the non-inferiority limit -``margin`` (the
    contrast the findings' verdicts use). ``final`` is the study's ``final`` table (columns
    group, seeds, test_acc*, vs_small*); its first row is the baseline."""
    final = final.reset_index(drop=True)
    y = np.arange(len(final))[::-1]
    fig, (acc, diff) = plt.subplots(1, 2, figsize=(12, 0.5 * len(final) + 2.0), sharey=True,
                                    gridspec_kw=dict(width_ratios=(1.2, 1)))
    base = final.iloc[0]
    if np.isfinite(base.test_acc_low):
        acc.axvspan(100 * base.test_acc_low, 100 * base.test_acc_high, color="grey", alpha=0.2,
                    label=f"baseline 95% interval ({base.group})")
    _bars(acc, final, "test_acc", y, digits=".1f")
    acc.set_xlabel("final test accuracy (%)")
    acc.legend(fontsize=7, loc="lower left")
    rest = final.iloc[1:]
    diff.axvline(0, color="black", lw=0.8)
    diff.axvline(-100 * margin, color="grey", ls="--", lw=1, label=f"-{100 * margin:g} pt: non-inferiority limit")
    _bars(diff, rest, "vs_small", y[1:], offset=1, digits="+.2f")
    diff.set_xlabel("test accuracy minus baseline (percentage points)")
    diff.legend(fontsize=7, loc="lower left")
    acc.set_yticks(y, [f"{g}  ({n} seeds)" for g, n in zip(final.group, final.seeds)], fontsize=8)
    acc.set_ylim(y.min() - 0.6, y.max() + 0.8)
    for ax in (acc, diff):
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, "error bars: 95% t-interval over seeds (left); Welch 95% interval of the difference "
             "(right). 'Recovers' = the right-hand interval lies entirely right of the dashed line.",
             ha="center", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _bars(ax, table: pd.DataFrame, key: str, y: np.ndarray, offset: int = 0, digits: str = ".1f") -> None:
    """Means (in %) with their interval (``key``, ``key_low``, ``key_high``), labelled with the mean."""
    mean = 100 * table[key].to_numpy(float)
    low = np.nan_to_num(mean - 100 * table[f"{key}_low"].to_numpy(float))
    high = np.nan_to_num(100 * table[f"{key}_high"].to_numpy(float) - mean)
    for i in range(len(table)):
        ax.errorbar(mean[i], y[i], xerr=[[low[i]], [high[i]]], fmt="o", ms=5, capsize=3,
                    color=COLOURS[(i + offset) % len(COLOURS)])
        ax.annotate(f"{mean[i]:{digits}}", (mean[i], y[i]), xytext=(0, 6), textcoords="offset points", fontsize=7,
                    ha="center")
