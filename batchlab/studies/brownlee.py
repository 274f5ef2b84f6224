"""Brownlee (2019): batch size controls the stability of training (``science.md`` section 2).

Blobs (500 train / 500 test), MLP 2-50(relu, he_uniform)-3, SGD lr 0.01 momentum 0.9,
200 epochs, reshuffled each epoch, batch-mean cross-entropy. The four runs of the article
(batch GD B=500, SGD at lr 0.01 and 0.001, mini-batch B=32) and its sweep B in
{4, ..., 450} at lr 0.01, over seeds. Measured: when test accuracy first reaches 80%, how
much it jitters over the last 50 epochs, and where each run ends (``analysis/brownlee.py``).
"""

from __future__ import annotations

from batchlab.analysis import brownlee as analysis
from batchlab.analysis.brownlee import FOUR, SWEEP
from batchlab.studies.base import FigureSpec, Grid, Study


def grids(s: dict) -> list[Grid]:
    common = dict(data="blobs", model="mlp", hidden=(50,), epochs=s["epochs"], momentum=0.9, seeds=s["seeds"])
    runs = [Grid(label, dict(common, batch_size=b, lr=lr)) for label, b, lr in FOUR]
    return runs + [Grid(SWEEP, dict(common, batch_size=list(s["sweep_batch_sizes"]), lr=s["sweep_lr"]))]


def _learning_curves(metric: str):
    def draw(tables, s):
        from batchlab.plots.learning_curves import band_curves

        return band_curves(tables["curves"], metric, ncols=2, title=(
            f"Brownlee blobs MLP 2-50-3, SGD momentum 0.9: {metric} vs epoch, {s['seeds']} seeds"))
    return draw


def _sweep_grid(tables, s):
    from batchlab.plots.learning_curves import band_curves

    return band_curves(tables["sweep_curves"], "acc", ncols=4, title=(
        f"Brownlee sweep: accuracy vs epoch for each batch size, lr {s['sweep_lr']:g}, {s['seeds']} seeds"))


def _stability(tables, s):
    from batchlab.plots.stability import stability_figure

    return stability_figure(tables["sweep"], s["threshold"], s["last_epochs"],
                            title=f"Brownlee blobs sweep (lr {s['sweep_lr']:g}, momentum 0.9, {s['seeds']} seeds)")


STUDY = Study(
    name="brownlee",
    question="Does batch size control the stability of training?",
    source=analysis.SOURCE,
    defaults=dict(seeds=5, epochs=200, sweep_batch_sizes=(4, 8, 16, 32, 64, 128, 256, 450), sweep_lr=0.01,
                  threshold=0.80, last_epochs=50),
    quick=dict(seeds=3, epochs=100, sweep_batch_sizes=(4, 32, 256), last_epochs=30),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("learning_curves_acc", _learning_curves("acc"), "curves"),
             FigureSpec("learning_curves_loss", _learning_curves("loss"), "curves"),
             FigureSpec("sweep_learning_curves", _sweep_grid, "sweep_curves"),
             FigureSpec("stability_vs_batch", _stability, "sweep")),
    findings=analysis.findings,
    notes=analysis.notes,
    minutes=(0.8, 0.3),
    limits=dict(threshold=(0.0, 1.0), last_epochs=(1, "epochs"), sweep_lr=(1e-30, None)),
)
