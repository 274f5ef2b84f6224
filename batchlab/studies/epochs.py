"""How many epochs? The best-validation epoch, early stopping, and batch size (``science.md`` section 1).

For each batch size B, the same seeds train twice: for the full epoch budget, and with
early stopping on the test loss (patience p, best parameters restored, as Keras'
``EarlyStopping(monitor='val_loss', patience=p, restore_best_weights=True)``). Same seeds
mean the same initialisation and data order, so the two runs agree epoch by epoch until
the early stop and every contrast is paired by seed. Measured per B: the best-validation
epoch, the epoch early stopping stops at, the epochs and updates it saves, and the test
accuracy it loses (or gains) against training the whole budget (``analysis/epochs.py``).

Default data: MNIST-1D with an MLP 40-128-128-10, SGD lr 0.02 momentum 0.9 for every B (the
learning rate is *not* re-tuned per batch size), 60 epochs: the test loss reaches its
minimum well inside the budget and then rises (the network overfits), at every B.
"""

from __future__ import annotations

from batchlab.analysis import epochs as analysis
from batchlab.analysis.epochs import EARLY, FULL, label
from batchlab.config import EarlyStopping
from batchlab.studies.base import FigureSpec, Grid, Study


def grids(s: dict) -> list[Grid]:
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), epochs=s["epochs"], lr=s["lr"],
                  momentum=s["momentum"], seeds=s["seeds"])
    stop = EarlyStopping(monitor="test_loss", patience=s["patience"], restore_best=True)
    out = []
    for b in s["batch_sizes"]:
        out.append(Grid(label(FULL, b), dict(common, batch_size=b)))
        out.append(Grid(label(EARLY, b), dict(common, batch_size=b, early_stopping=stop)))
    return out


def _title(s: dict) -> str:
    width = "-".join(str(h) for h in s["hidden"])
    return (f"{s['data']}, MLP {width}, SGD lr {s['lr']:g} momentum {s['momentum']:g}, {s['epochs']} epochs\n"
            f"early stopping on test loss, patience {s['patience']}, best restored")


def _curves(tables, s):
    from batchlab.plots.epochs import marked_curves

    return marked_curves(tables["curves"], tables["by_batch"], _title(s))


def _budget(tables, s):
    from batchlab.plots.epochs import budget_figure

    return budget_figure(tables["by_batch"], s["band"], _title(s))


STUDY = Study(
    name="epochs",
    question="How many epochs should one train, and how do the best-validation epoch and early stopping change with B?",
    source=analysis.SOURCE,
    defaults=dict(data="mnist1d", hidden=(128, 128), lr=0.02, momentum=0.9, epochs=60, patience=10,
                  batch_sizes=(16, 64, 256), seeds=5, band=0.01),
    quick=dict(seeds=2, hidden=(64, 64), epochs=20, patience=4, batch_sizes=(16, 64)),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("learning_curves_marked", _curves, "curves"),
             FigureSpec("early_stopping_by_batch", _budget, "by_batch")),
    findings=analysis.findings,
    notes=analysis.notes,
    minutes=(1.5, 0.2),
    limits=dict(band=(0.0, None)),
)
