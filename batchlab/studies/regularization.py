"""Regularisation meets batch size: do dropout, weight decay, batch norm and ghost batch norm
keep long training from over-fitting, and does ghost batch norm narrow the large-batch gap?
(``science.md`` sections 1 and 5; the seed articles; Hoffer et al. 2017.)

A training set small enough to over-fit (MNIST-1D, 1,000 of its 4,000 training rows, each
class keeping its share; the whole 1,000-row test set), an MLP 40-128-128-10, SGD at one lr
with momentum 0.9 for every B, 200 epochs: without regularisation the test loss reaches its
lowest within the first tens of epochs and then climbs. Arms, each at every B and seed:
none; dropout after each hidden activation; weight decay (L2 in SGD); batch norm before each
hidden activation; ghost batch norm over virtual batches of ``ghost_size`` rows (only at B
above it: below, it is batch norm). Measured per run and summarised per arm and B
(``analysis/regularization.py``): final and best test accuracy, the generalization gap over
epochs, the end-to-lowest test-loss ratio, where over-fitting starts, and each regulariser's
gain over none as B changes.
"""

from __future__ import annotations

from batchlab.analysis import regularization as analysis
from batchlab.analysis.regularization import BATCH_NORM, DECAY, DROPOUT, GHOST, NONE, label
from batchlab.studies.base import FigureSpec, Grid, Study


def training_set(s: dict):
    """The study's data: ``train_rows`` of the set's training rows (seeded, stratified) and
    its whole test set."""
    from batchlab.api import resolve_data
    from batchlab.data.dataset import training_subset

    dataset, _ = resolve_data(s["data"], standardize=None, test_fraction=0.2, label="label")
    return training_subset(dataset, s["train_rows"])


def grids(s: dict) -> list[Grid]:
    common = dict(data=training_set(s), model="mlp", hidden=tuple(s["hidden"]), epochs=s["epochs"], lr=s["lr"],
                  momentum=s["momentum"], seeds=s["seeds"])
    arms = {NONE: {}, DROPOUT: dict(dropout=s["dropout"]), DECAY: dict(weight_decay=s["weight_decay"]),
            BATCH_NORM: dict(norm="batch"), GHOST: dict(norm="ghost", ghost_size=s["ghost_size"])}
    return [Grid(label(arm, b), dict(common, batch_size=b, **extra))
            for b in s["batch_sizes"] for arm, extra in arms.items() if arm != GHOST or b > s["ghost_size"]]


def _title(s: dict) -> str:
    width = "-".join(str(h) for h in s["hidden"])
    return (f"{s['data']} ({s['train_rows']} training rows), MLP {width}, SGD lr {s['lr']:g} momentum "
            f"{s['momentum']:g}, {s['epochs']} epochs")


def _loss(tables, s):
    from batchlab.plots.regularization import curves_by_arm

    return curves_by_arm(tables["curves"], tables["by_arm"], "loss", _title(s))


def _gap(tables, s):
    from batchlab.plots.regularization import curves_by_arm

    return curves_by_arm(tables["curves"], tables["by_arm"], "gap", _title(s))


def _by_batch(tables, s):
    from batchlab.plots.regularization import by_batch_figure

    return by_batch_figure(tables["by_arm"], tables["gains"], _title(s))


STUDY = Study(
    name="regularization",
    question="Do dropout, weight decay, batch norm and ghost batch norm keep long training from over-fitting, "
             "and how does their effect change with B?",
    source=f"{analysis.SEED_SOURCE}; {analysis.HOFFER}",
    defaults=dict(data="mnist1d", train_rows=1000, hidden=(128, 128), lr=0.02, momentum=0.9, epochs=200,
                  batch_sizes=(16, 64, 256), seeds=4, dropout=0.3, weight_decay=5e-4, ghost_size=16),
    quick=dict(train_rows=500, hidden=(64, 64), epochs=40, batch_sizes=(16, 128), seeds=2),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("test_loss_by_regulariser", _loss, "curves"),
             FigureSpec("generalization_gap_by_regulariser", _gap, "curves"),
             FigureSpec("accuracy_by_batch", _by_batch, "by_arm")),
    findings=analysis.findings,
    notes=analysis.notes,
    minutes=(1.0, 0.3),
    limits=dict(train_rows=(2, None), epochs=(1, None), seeds=(1, None), batch_sizes=(2, None),
                dropout=(0.0, 0.99), weight_decay=(0.0, None), ghost_size=(2, None), lr=(0.0, None),
                momentum=(0.0, 0.99)),
)
