"""The quick-size label on a figure: a study run with ``--quick`` draws its figures from fewer
seeds, epochs and batch sizes, and a figure copied out of its folder must still say so."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchlab.analysis.findings import QUICK_LABEL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STRIP_INCHES = 0.3  # the band added above the figure for the label


def mark_quick(fig: "Figure") -> "Figure":
    """``fig`` with :data:`QUICK_LABEL` written above everything else, in red.

    A figure laid out by matplotlib's constrained layout gets the label as the first line of
    its title (the layout makes room for it). Any other figure (already laid out) grows by a
    band at the top that holds the label: every axes and figure text keeps its size in inches
    and moves down with the rest, so nothing of the drawing moves relative to anything else."""
    engine = fig.get_layout_engine()
    if engine is not None and type(engine).__name__ == "ConstrainedLayoutEngine":
        title = fig.get_suptitle()
        fig.suptitle(f"{QUICK_LABEL.upper()}\n{title}" if title else QUICK_LABEL.upper())
        return fig
    width, height = fig.get_size_inches()
    scale = height / (height + STRIP_INCHES)
    fig.set_size_inches(width, height + STRIP_INCHES)
    for ax in fig.axes:
        box = ax.get_position()
        ax.set_position([box.x0, box.y0 * scale, box.width, box.height * scale])
    # The suptitle is also one of ``fig.texts``: moved twice, it came down onto the panels' titles.
    texts = {id(text): text for text in [*fig.texts, *([fig._suptitle] if fig._suptitle is not None else [])]}
    for text in texts.values():
        x, y = text.get_position()
        text.set_position((x, y * scale))
    fig.text(0.5, 1 - 0.5 * STRIP_INCHES / (height + STRIP_INCHES), QUICK_LABEL.upper(), ha="center", va="center",
             fontsize=9, fontweight="bold", color="tab:red")
    return fig
