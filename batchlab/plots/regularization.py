"""Views of the regularization study: learning curves by regulariser at each batch size, and
final accuracy, gain over no regularisation and late over-fitting against B."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.analysis.regularization import ARMS  # noqa: E402
from batchlab.diagnosis import RISE  # noqa: E402
from batchlab.plots.log_ticks import batch_axis, readable_log_axis  # noqa: E402
from batchlab.plots.stability import interval_errorbar  # noqa: E402

COLOURS = dict(zip(ARMS, ("black", "tab:blue", "tab:orange", "tab:green", "tab:red")))


def curves_by_arm(curves: pd.DataFrame, by_arm: pd.DataFrame, kind: str, title: str) -> plt.Figure:
    """One panel per batch size, one colour per arm, against epoch (means over seeds).

    ``kind`` "loss": test loss (solid, log scale) and training loss (dotted), a triangle at
    each arm's mean epoch of lowest test loss; "gap": train minus test accuracy."""
    sizes = sorted(int(b) for b in curves.batch_size.unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 4.3), sharey=True, squeeze=False)
    for ax, b in zip(axes[0], sizes):
        for arm in [a for a in ARMS if a in set(curves.arm)]:
            sel = curves[(curves.batch_size == b) & (curves.arm == arm)]
            if sel.empty:
                continue
            if kind == "loss":
                _loss_lines(ax, sel, by_arm[(by_arm.arm == arm) & (by_arm.batch_size == b)], COLOURS[arm], arm)
            else:
                acc = sel[sel.metric == "acc"].pivot_table(index="epoch", columns="split", values="mean")
                ax.plot(acc.index, acc["train"] - acc["test"], color=COLOURS[arm], lw=1.3, label=arm)
        seeds = int(curves[curves.batch_size == b]["count"].max())
        ax.set_title(f"B={b}  ({seeds} seeds)", fontsize=9)
        ax.set_xlabel("epoch (passes over the training set)")
        ax.grid(alpha=0.3)
    if kind == "loss":
        axes[0, 0].set_yscale("log")
        readable_log_axis(axes[0, 0].yaxis)
        axes[0, 0].set_ylabel("cross-entropy loss (log scale)")
        note = ("solid: test loss, dotted: training loss, means over seeds; \u25bc: mean epoch of the lowest "
                "test loss (over-fitting starts after it)")
    else:
        axes[0, 0].axhline(0, color="grey", lw=0.8)
        axes[0, 0].set_ylabel("train - test accuracy (fraction)")
        note = "generalization gap: mean training accuracy minus mean test accuracy over seeds"
    seen = {}  # every arm once, whichever panel has it (ghost batch norm only above its ghost size)
    for ax in axes[0]:
        seen.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=len(seen), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.04))
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.005, note, ha="center", fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def _loss_lines(ax, sel: pd.DataFrame, row: pd.DataFrame, colour: str, arm: str) -> None:
    loss = sel[sel.metric == "loss"]
    test = loss[loss.split == "test"].sort_values("epoch")
    train = loss[loss.split == "train"].sort_values("epoch")
    ax.plot(test.epoch, test["mean"], color=colour, lw=1.3, label=arm)
    ax.plot(train.epoch, train["mean"], color=colour, lw=0.9, ls=":")
    if len(row):
        best = int(round(float(row.best_epoch.iloc[0])))
        at = test[test.epoch == best]["mean"]
        if len(at):
            ax.plot([best], [float(at.iloc[0])], marker="v", color=colour, ms=7, ls="none")


def by_batch_figure(by_arm: pd.DataFrame, gains: pd.DataFrame, title: str) -> plt.Figure:
    """Against B (log2 axis), mean and 95% interval over seeds per arm: (a) final test accuracy;
    (b) its gain over no regularisation; (c) final / lowest test loss, with the diagnosis'
    over-fit line at 1 + RISE. Arms are offset a little along B so their bars do not hide
    each other."""
    sizes = sorted(int(b) for b in by_arm.batch_size.unique())
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.6))
    arms = [arm for arm in ARMS if arm in set(by_arm.arm)]
    for i, arm in enumerate(arms):
        shift = 2.0 ** (0.06 * (i - (len(arms) - 1) / 2))
        rows = by_arm[by_arm.arm == arm].sort_values("batch_size")
        x = rows.batch_size.to_numpy(float) * shift
        interval_errorbar(a, x, rows, "final_test_acc", color=COLOURS[arm], label=arm)
        interval_errorbar(c, x, rows, "loss_ratio", color=COLOURS[arm], label=arm)
        g = gains[gains.arm == arm].sort_values("batch_size")
        if len(g):
            scaled = g.assign(**{k: 100 * g[k] for k in ("gain", "gain_low", "gain_high")})
            interval_errorbar(b, g.batch_size.to_numpy(float) * shift, scaled, "gain", color=COLOURS[arm], label=arm)
    b.axhline(0, color="grey", lw=0.8)
    c.axhline(1 + RISE, color="grey", ls="--", lw=0.9, label=f"over-fit line ({1 + RISE:g}x)")
    a.set_ylabel("final test accuracy (fraction)")
    a.set_title("(a) final test accuracy", fontsize=9)
    b.set_ylabel("test accuracy minus none (percentage points)")
    b.set_title("(b) gain over no regularisation", fontsize=9)
    c.set_yscale("log")
    readable_log_axis(c.yaxis)
    c.set_ylabel("final / lowest test loss (log scale)")
    c.set_title("(c) late over-fitting: test loss at the end vs its lowest", fontsize=9)
    for ax in (a, b, c):
        batch_axis(ax, sizes)
        ax.legend(fontsize=7)
    fig.suptitle(title + "\nmarkers: mean over seeds (geometric in (c)); error bars: 95% t-interval over seeds "
                 "(Welch in (b))", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["curves_by_arm", "by_batch_figure"]

