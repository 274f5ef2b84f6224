"""Figures the commands draw from finished runs, in the figure helpers (``figure_helpers.py``):
the runs' records become a DataFrame there, so the command itself never imports pandas."""

from __future__ import annotations

from typing import Sequence

from batchlab.plots.learning_curves import learning_curves
from batchlab.results import RunResult
from batchlab.store.records import series_frame


def runs_learning_curves(runs: Sequence[RunResult], metric: str = "acc", **kwargs):
    """:func:`~batchlab.plots.learning_curves.learning_curves` of finished runs, from their
    per-epoch records."""
    return learning_curves(series_frame(runs, "epoch"), metric, **kwargs)
