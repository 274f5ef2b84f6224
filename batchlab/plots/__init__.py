"""Plot layer: one function per view; reads DataFrames only."""

from batchlab.plots.learning_curves import learning_curves, save_figure

__all__ = ["learning_curves", "save_figure"]
