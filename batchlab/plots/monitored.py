"""Monitored runs (the user's own loop, ``batchlab.monitor``): what the instruments recorded,
against the update number, one panel per quantity and one line per run."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.plots.log_ticks import readable_log_axis  # noqa: E402

# What a panel shows (title, y axis), in the order drawn; a quantity no run recorded gets no panel.
QUANTITIES = {"mb_loss": ("mini-batch loss", "loss of the update's batch"),
              "grad_norm": ("gradient norm ||g||", "L2 norm of the mean gradient"),
              "update_norm": ("update size", "||theta_t+1 - theta_t||"),
              "dist_init": ("distance from the initial weights", "||theta_t - theta_0||"),
              "weight_norm": ("weight norm", "||theta_t||"),
              "noise_scale": ("noise scale B_simple", "samples (tr Sigma / ||G||^2)"),
              "sample_noise_scale": ("B_simple from per-sample gradients", "samples (tr Sigma / ||G||^2)")}
LOG = ("mb_loss", "grad_norm", "update_norm", "noise_scale", "sample_noise_scale")  # spread over decades: log axes


def monitored_figure(steps: pd.DataFrame, label: str = "label", title: str | None = None,
                     ncols: int = 3) -> plt.Figure:
    """``steps``: per-step rows (``step``, a ``label`` column naming each run, and any of
    :data:`QUANTITIES`). NaN values (updates not measured, a noise scale withheld) are gaps."""
    shown = [q for q in QUANTITIES if q in steps and steps[q].notna().any()]
    cols = max(1, min(ncols, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
    for ax, quantity in zip(axes.flat, shown):
        for run_name, run in steps.groupby(label, sort=True):
            values = run[quantity].to_numpy(float)
            ok = np.isfinite(values) & ((values > 0) if quantity in LOG else True)
            # NaN where not measured: the line breaks there instead of bridging the gap, so a
            # quantity measured every k-th update gets points (a line of isolated values is invisible)
            sparse = ok.sum() < 0.5 * len(ok)
            ax.plot(run["step"].to_numpy(), np.where(ok, values, np.nan), lw=1.2, label=str(run_name),
                    marker="." if sparse else None, ms=3)
        name, unit = QUANTITIES[quantity]
        if quantity in LOG:
            ax.set_yscale("log")
            readable_log_axis(ax.yaxis)
            unit += " (log scale)"
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(unit, fontsize=8)
        ax.set_xlabel("update (optimizer step)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    if shown and steps[label].nunique() > 1:
        axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
