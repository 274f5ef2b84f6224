"""Gradient norm vs batch size: measured RMS norms, the spread over trials, and the theory curve.

The theory gives the expected *squared* norm, E||g_B||^2 = ||G||^2 + tr(Sigma)/B (batch mean;
``science.md`` section 4), so it is compared with the RMS norm sqrt(mean ||g_B||^2) over the
trials, not with the mean norm: by Jensen, mean ||g_B|| < sqrt(E||g_B||^2), by a factor that
is large where the noise dominates (small B), and would read as a disagreement.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from batchlab.plots.log_ticks import readable_log_axis

BAND = ("q05_norm", "q95_norm")  # the spread drawn: 5% and 95% quantiles of ||g_B|| over the trials
DRAWN = {"without": "without replacement from a pool of P rows", "with": "with replacement"}


def theory_label(reduction: str, sampling: str) -> str:
    """The drawn theory curve as a formula: sqrt of E||g_B||^2 for this reduction and sampling.

    Batch mean: ||G||^2 + tr(Sigma)/B, the noise term times (P-B)/(P-1) without replacement;
    batch sum: B^2 times that (``science.md`` section 4; ``instruments/gradients.expected_sq_norm``).
    """
    factor = r"\cdot(P-B)/(P-1)" if sampling == "without" else ""  # inline: legible at legend size
    if reduction == "sum":
        inside = rf"B^2\|G\|^2 + B\,\mathrm{{tr}}\,\Sigma{factor}"
    else:
        inside = rf"\|G\|^2 + \mathrm{{tr}}\,\Sigma/B{factor}"
    return rf"theory $\sqrt{{{inside}}}$"


def gradient_norm_figure(points: pd.DataFrame, title: str = "", loss_unit: str = "nats") -> plt.Figure:
    """One panel per (sampling mode, loss reduction): rows are the sampling modes present
    (without / with replacement), columns the reductions; one colour per checkpoint epoch.

    Each panel: markers = RMS norm sqrt(mean_sq_norm) over the trials; shaded band = 5%..95%
    quantiles of the norms (``q05_norm``, ``q95_norm``; omitted for older tables without
    them); dashed = sqrt(theory_sq_norm), whose formula the legend states. Log-log axes.
    """
    samplings = list(dict.fromkeys(points.sampling))
    reductions = list(dict.fromkeys(points.reduction))
    fig, axes = plt.subplots(len(samplings), len(reductions), figsize=(5.6 * len(reductions), 4.6 * len(samplings)),
                             squeeze=False, layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    epochs = sorted(set(points.epoch))
    for row, sampling in zip(axes, samplings):
        for ax, reduction in zip(row, reductions):
            sel = points[(points.sampling == sampling) & (points.reduction == reduction)]
            for colour, epoch in zip(colours, epochs):
                _draw_epoch(ax, sel[sel.epoch == epoch].sort_values("batch_size"), colour)
            _dress_panel(ax, reduction, sampling, epochs, colours, band=set(BAND) <= set(points.columns),
                         loss_unit=loss_unit)
    fig.suptitle(title, fontsize=11)
    return fig


def _draw_epoch(ax, group: pd.DataFrame, colour: str) -> None:
    """One checkpoint in one panel: quantile band, RMS markers, theory curve."""
    b = group.batch_size.to_numpy()
    if set(BAND) <= set(group.columns):
        ax.fill_between(b, group[BAND[0]], group[BAND[1]], color=colour, alpha=0.18, lw=0)
    ax.plot(b, np.sqrt(group.mean_sq_norm), "o", ms=4, color=colour)
    ax.plot(b, np.sqrt(group.theory_sq_norm), "--", lw=1.2, color=colour)


def _dress_panel(ax, reduction: str, sampling: str, epochs: list, colours: list, band: bool,
                 loss_unit: str = "nats") -> None:
    """Axes, labels (what and units) and a legend: colours are epochs, styles are what is drawn."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B (examples)")
    ax.set_ylabel(f"RMS $\\|g_B\\|$, gradient of the batch-{reduction} loss\n({loss_unit} per unit parameter)")
    ax.set_title(f"batch-{reduction} loss\nbatches drawn {DRAWN.get(sampling, sampling)}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    # Plain numbers (1, 64, 0.5) rather than powers; minor ticks labelled only on short ranges.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    readable_log_axis(ax.yaxis)
    handles = [Line2D([], [], color=c, marker="o", ms=4, ls="", label=f"epoch {e}") for c, e in zip(colours, epochs)]
    rms = r"measured RMS $\sqrt{\mathrm{mean}\,\|g_B\|^2}$"
    handles.append(Line2D([], [], color="0.3", marker="o", ms=4, ls="", label=rms))
    if band:
        handles.append(Patch(color="0.3", alpha=0.25, lw=0, label=r"5%..95% of $\|g_B\|$ over trials"))
    handles.append(Line2D([], [], color="0.3", ls="--", lw=1.2, label=theory_label(reduction, sampling)))
    ax.legend(handles=handles, fontsize=8.5, loc="best", framealpha=0.85)
