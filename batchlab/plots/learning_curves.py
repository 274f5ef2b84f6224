"""Learning curves: metric vs epoch, train and test lines, one panel per group (batch size,
and lr when several), mean over seeds with a min-max band."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from batchlab.analysis.curves import curves_table, fits_by_panel  # noqa: E402
from batchlab.paths import OutputSet  # noqa: E402
from batchlab.plots.log_ticks import readable_log_axis  # noqa: E402
from batchlab.plots.memo import svg_text  # noqa: E402
from batchlab.profiling import timed  # noqa: E402

LINES = {"train": "tab:blue", "test": "tab:orange"}


def learning_curves(history: pd.DataFrame, metric: str = "acc", *, x: str = "epoch", ncols: int = 4,
                    title: str | None = None, by: list[str] | None = None) -> plt.Figure:
    """``metric`` is ``acc`` or ``loss``: draws ``train_<metric>`` and ``test_<metric>`` per panel
    (panels: ``by``, default the settings that vary between runs), each with the diagnosis of its
    runs' curves (``batchlab/diagnosis.py``) under its title."""
    return band_curves(curves_table(history, by, (metric,), x=x), metric, x=x, ncols=ncols, title=title,
                       fits=fits_by_panel(history, by))


YLABELS = {"acc": "accuracy", "r2": "R² (1 = exact, 0 = the mean)", "loss": "loss (log scale)"}


@timed("figures")
def band_curves(table: pd.DataFrame, metric: str = "acc", *, x: str = "epoch", ncols: int = 4,
                title: str | None = None, fits: dict[str, str] | None = None) -> plt.Figure:
    """Draw a :func:`batchlab.analysis.curves.curves_table`: one panel per ``panel`` value.

    Loss panels use a log axis, so the epoch-0 loss and a run that blows up do not squash
    the rest of the curve.
    """
    table = table[table.metric == metric]
    panels = list(dict.fromkeys(table.panel))
    if not panels:  # e.g. no batch size of a sweep has a best lr: say so rather than fail
        return _nothing_to_draw(title or f"Learning curves ({metric})")
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    # At least 6.5 inches wide, so a one- or two-panel figure's title is not clipped.
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(3.6 * ncols, 6.5), 2.9 * nrows + 0.5), sharex=True,
                             sharey=True, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes.flat[:len(panels)]):
        if i + ncols >= len(panels):  # nothing visible below: this panel shows its own x axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(x.replace("_", " "))
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, table[table.panel == panel], panel, metric, x, (fits or {}).get(panel))
    for ax in axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[:, 0]:
        ax.set_ylabel(YLABELS.get(metric, metric))
    axes.flat[0].legend(fontsize=8)
    note = "line: mean over seeds; band: min..max over seeds" + \
        ("; fit: what the curves say (docs/diagnosis.md)" if fits else "")
    fig.text(0.5, 0.005, note, ha="center", fontsize=7, color="grey")
    _frame(fig, title or f"Learning curves ({metric})", nrows, ncols)
    return fig


def _frame(fig: plt.Figure, title: str, nrows: int, ncols: int) -> None:
    """The title (wrapped to the figure's width) and the margins around the panels, in inches
    for what surrounds them (tick labels, axis labels, titles), set directly: matplotlib's
    tight_layout draws the whole figure once more to measure them, which took about a third of
    a command's figure time."""
    width, height = fig.get_size_inches()
    heading = textwrap.fill(title, int(width * 13))
    fig.suptitle(heading, fontsize=10)
    top = 0.38 + 0.17 * (heading.count("\n") + 1)
    fig.subplots_adjust(left=0.85 / width, right=1 - 0.15 / width, bottom=0.62 / height, top=1 - top / height,
                        wspace=0.25 / ((width - 1.0) / ncols), hspace=0.7 / ((height - top - 0.62) / nrows))


def _nothing_to_draw(title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.5, 2.0))
    ax.axis("off")
    ax.text(0.5, 0.5, "no runs to draw", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    return fig


def _draw_panel(ax: plt.Axes, sel: pd.DataFrame, panel: str, metric: str, x: str, fit: str | None = None) -> None:
    """One panel: each split's mean over seeds, with its min..max band where there are seeds, and
    ``fit``, what its runs' curves say, in its lower left corner."""
    if fit:
        ax.text(0.02, 0.03, fit, transform=ax.transAxes, fontsize=7, color="dimgrey",
                bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
    for split, colour in LINES.items():
        band = sel[sel.split == split].sort_values(x)
        ax.plot(band[x], band["mean"], color=colour, lw=1.2, label=split)
        if band["count"].max() > 1:
            ax.fill_between(band[x], band["min"], band["max"], color=colour, alpha=0.2, lw=0)
    seeds = int(sel["count"].max())
    # y given: matplotlib would otherwise measure every axis on each draw to place the
    # title above tick labels, which are never on top here (a fifth of the figure's time).
    ax.set_title(panel + (f"  ({seeds} seeds)" if seeds > 1 else ""), fontsize=9, y=1.0)
    ax.grid(alpha=0.3)
    if metric == "loss":
        ax.set_yscale("log")
        readable_log_axis(ax.yaxis)  # 0.6, not 6x10^-1, and at least three labels


@timed("figures")
def save_figure(fig: plt.Figure, path: str | Path) -> list[Path]:
    """Write ``path`` as PNG and SVG (the same bytes whenever the same figure is drawn), the two
    replacing earlier ones together or not at all (``paths.OutputSet``); returns the files."""
    path = Path(path)
    try:
        with OutputSet(path.parent) as outputs:
            # SVG first: a layout redone after drawing at the PNG's dpi moves things by 1e-6 pt, and
            # the SVG is to be the one the report draws (``plots/memo.py``).
            outputs.write(path.with_suffix(".svg").name, svg_text(fig))
            outputs.write(path.with_suffix(".png").name, lambda png: fig.savefig(png, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return [path.with_suffix(".png"), path.with_suffix(".svg")]
