"""Gradient norm vs batch size: measured means with error bars, and the theory curve."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def gradient_norm_figure(points: pd.DataFrame, title: str = "") -> plt.Figure:
    """One panel per loss reduction; one line per checkpoint epoch (first sampling mode)."""
    sampling = points.sampling.iloc[0]
    points = points[points.sampling == sampling]
    reductions = list(dict.fromkeys(points.reduction))
    fig, axes = plt.subplots(1, len(reductions), figsize=(5.2 * len(reductions), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, reduction in zip(axes[0], reductions):
        sel = points[points.reduction == reduction]
        for colour, (epoch, group) in zip(colours, sel.groupby("epoch")):
            ax.errorbar(group.batch_size, group.mean_norm, yerr=group.std_norm, fmt="o", ms=3, capsize=2,
                        color=colour, label=f"epoch {epoch} (measured)")
            ax.plot(group.batch_size, np.sqrt(group.theory_sq_norm), "--", color=colour, lw=1,
                    label=f"epoch {epoch}: sqrt(||G||^2 + tr(S)/B) theory" if reduction == "mean"
                    else f"epoch {epoch}: theory")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"||gradient of batch-{reduction} loss||")
        ax.set_title(f"batch-{reduction} loss, sampled {sampling} replacement", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title + " (error bars: std over trials)", fontsize=10)
    fig.tight_layout()
    return fig
