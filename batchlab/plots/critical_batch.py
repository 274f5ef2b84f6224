"""Figures of the critical-batch study: steps to target with the fit and its intervals, the
simple noise scale over training, and the share of seeds reaching the target per (B, lr).

Built on :mod:`batchlab.plots.scaling`; reads tables only and returns figures.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from batchlab.analysis.scaling import CriticalBatchFit
from batchlab.plots.log_ticks import batch_ticks, readable_log_axis
from batchlab.plots.scaling import heatmap_figure, to_target_figure


def to_target_with_intervals(best: pd.DataFrame, fit: pd.Series, target: str, title: str) -> plt.Figure:
    """:func:`to_target_figure` plus B_crit's interval over seeds (shaded), the operational
    critical batch size (dashed) and the batch sizes left out of the fit (crosses on the top
    edge, with the share of seeds that reached the target)."""
    model = None
    if math.isfinite(fit.get("b_crit", math.nan)):
        model = CriticalBatchFit(fit.s_min, fit.b_crit, math.nan, math.nan)
    fig = to_target_figure(best, model, target)
    for ax in fig.axes:
        if model is not None and math.isfinite(fit.b_crit_low) and math.isfinite(fit.b_crit_high):
            ax.axvspan(fit.b_crit_low, fit.b_crit_high, color="tab:orange", alpha=0.12, lw=0,
                       label=f"B_crit 95% over seeds' fits [{fit.b_crit_low:.0f}, {fit.b_crit_high:.0f}]")
        if math.isfinite(fit.operational):
            bounds = "" if math.isnan(fit.operational_low) else \
                f" [{fit.operational_low:.0f}, {fit.operational_high:.0f}]"
            ax.axvline(fit.operational, color="tab:red", ls="--", lw=1,
                       label=f"operational B (+{fit.excess:.0%} steps): {fit.operational:.0f}{bounds}")
        out = best[~best.in_fit]
        for b, share in zip(out.batch_size, out.reached):
            ax.plot([b], [1], "x", color="tab:red", ms=7, transform=ax.get_xaxis_transform(), clip_on=False)
            ax.annotate(f"excluded:\n{share:.0%} of seeds\nreached", (b, 1), xycoords=("data", "axes fraction"),
                        xytext=(0, -4), textcoords="offset points", ha="center", va="top", fontsize=6,
                        color="tab:red")
        ax.set_xlabel("batch size B (log scale)")
        plain_log_ticks(ax, best.batch_size)
        ax.legend(fontsize=6.5, loc="lower left" if ax is fig.axes[0] else "upper left")
    fig.axes[0].set_ylabel("optimizer steps to target (log scale)")
    fig.axes[1].set_ylabel("training samples to target (log scale)")
    fig.suptitle(f"{title}\nsteps and samples to reach {target} at each B's best lr; "
                 "error bars: ± std over seeds", fontsize=9)
    fig.tight_layout()
    return fig


def noise_over_training(band: pd.DataFrame, exact: pd.DataFrame, online: pd.DataFrame, fit: pd.Series,
                        crossing_epoch: float, title: str) -> plt.Figure:
    """Left: B_simple vs epoch, exact at checkpoints (each run a dot, ``band``'s mean over runs a
    line) and the online two-batch estimate per run (gaps where it is withheld), beside the
    fitted B_crit and its interval over the seeds' own fits. Right: the two parts of B_simple, |G|^2 and tr(Sigma)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.6), sharex=True)
    colours = plt.get_cmap("tab10")
    for i, (seed, run) in enumerate(online.groupby("seed")):
        withheld = run.noise_scale.isna().mean()
        left.plot(run.epoch_fraction, run.noise_scale, lw=0.7, alpha=0.6, color=colours(i + 2),
                  label=f"online two-batch, seed {seed} ({withheld:.0%} of steps withheld)")
        right.plot(run.epoch_fraction, run.noise_grad_sq, lw=0.6, alpha=0.5, color="tab:blue")
        right.plot(run.epoch_fraction, run.noise_trace, lw=0.6, alpha=0.5, color="tab:green")
    for ax, key, colour, name in ((left, "noise_scale", "black", "B_simple exact, per-sample gradients"),
                                  (right, "grad_sq", "tab:blue", "|G|² exact (online EMA: thin lines)"),
                                  (right, "trace", "tab:green", "tr(Σ) exact (online EMA: thin lines)")):
        ax.plot(exact.epoch, exact[key], "o", ms=3.5, mfc="none", color=colour, alpha=0.8)
        ax.plot(band.epoch, band[key], "-", lw=1.4, color=colour, label=f"{name} (dots: runs; line: mean)")
    if math.isfinite(fit.get("b_crit", math.nan)):
        left.axhline(fit.b_crit, color="tab:orange", lw=1.2, label=f"fitted B_crit = {fit.b_crit:.0f}")
        if math.isfinite(fit.b_crit_low) and math.isfinite(fit.b_crit_high):
            left.axhspan(fit.b_crit_low, fit.b_crit_high, color="tab:orange", alpha=0.15, lw=0,
                         label="B_crit 95% interval over seeds' fits")
    if math.isfinite(crossing_epoch):
        for ax in (left, right):
            ax.axvline(crossing_epoch, color="grey", ls=":", lw=1, label="these runs reach the target")
    left.set_ylabel("simple noise scale B_simple = tr(Σ)/|G|²\n(samples, log scale)")
    right.set_ylabel("squared gradient norm (log scale)")
    right.set_title("online EMAs that dip to zero or below leave the log axis", fontsize=7, color="grey")
    for ax in (left, right):
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plain_log_ticks(ax, batch_sizes=None) -> None:
    """Plain numbers on a log y axis, at least three of them whatever its span
    (``log_ticks.readable_log_axis``), and, given ``batch_sizes``, one labelled x tick per batch
    size (64, not 2^6)."""
    readable_log_axis(ax.yaxis)
    if batch_sizes is not None:
        batch_ticks(ax.xaxis, batch_sizes)


def reached_heatmap(settings: pd.DataFrame, best: pd.DataFrame, target: str, title: str) -> plt.Figure:
    """:func:`heatmap_figure` of the share of seeds that reached the target per lr and B; each
    cell also gives the mean steps to the target, and each B's best lr is outlined."""
    fig = heatmap_figure(settings, "reached", best=best)
    ax = fig.axes[0]
    table = settings.pivot_table(index="lr", columns="batch_size", values=["reached", "steps"])
    for text in ax.texts:
        j, i = (round(v) for v in text.get_position())
        share, steps = table["reached"].iloc[i, j], table["steps"].iloc[i, j]
        text.set_text(f"{share:.0%}" + (f"\n{steps:.0f} steps" if share > 0 else "\nnever"))
        text.set_fontsize(6.5)
    fig.set_size_inches(max(fig.get_size_inches()[0], 8.0), fig.get_size_inches()[1] + 0.9)
    fig.axes[-1].set_ylabel(f"share of seeds reaching {target}")
    ax.set_title(f"{title}\nshare of seeds reaching {target} (0% = censored: never reached), mean steps of those "
                 "that did;\nred box: each B's best lr", fontsize=8.5)
    fig.tight_layout()
    return fig
