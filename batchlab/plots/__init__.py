"""Plot layer: one function per view; reads DataFrames (or finished runs, made into one) only."""

from batchlab.plots.learning_curves import learning_curves, runs_learning_curves, save_figure

__all__ = ["learning_curves", "runs_learning_curves", "save_figure"]
