"""Shen (2018) finding 1, with the scaling rules of Goyal et al. and Hoffer et al. (``science.md``
sections 3.1, 4 and 5): does a larger learning rate, or a switch to a small batch, recover the
test accuracy a large batch loses at a fixed learning rate?

Real MNIST (the 5,000-image set: 4,000 train / 1,000 test), MLP 784-128-128-10 (relu),
plain SGD (no momentum), batch-mean cross-entropy, the same number of epochs for every run.
Six groups, each over the same seeds:

- ``small``: B=64 at lr 0.01, the small-batch baseline;
- ``large``: B=1024 at the same lr 0.01 (16x fewer updates per epoch);
- ``x10``: B=1024 at lr 0.1 (Shen's remedy);
- ``linear``: B=1024 at lr 0.01 x 1024/64 = 0.16 with a linear warmup (Goyal et al. 2017);
- ``sqrt``: B=1024 at lr 0.01 x sqrt(1024/64) = 0.04 (Hoffer et al. 2017);
- ``switch``: B=1024 for the first half of the epochs, then B=64, lr 0.01 throughout; the
  parameters and the optimizer state carry over the switch (a run with ``phases``).

Measured (``analysis/lr_recovery.py``): the final test accuracy of each group (mean and 95%
t-interval over seeds) and its difference from the baseline (Welch 95% interval). "Recovers" is tested as non-inferiority:
the whole interval of (group - baseline) must lie above ``-margin``.

Sizes: the MLP is 128-128 and trains 60 epochs: on 4,000 images the B=64 baseline is still
climbing at 30 epochs (about 91% test accuracy at epoch 30 and 92% at 60, measured here for
256-256 and 128-128 alike), and 128-128 costs about a third as much. The three runs at
B=1024 with a constant lr share one grid, so they train as one vmapped cohort. Quick size:
digits, MLP 64, 20 epochs, 3 seeds.
"""

from __future__ import annotations

from batchlab.analysis import lr_recovery as analysis
from batchlab.analysis.lr_recovery import constant_label, labels, learning_rates, switch_epoch
from batchlab.studies.base import FigureSpec, Grid, Study


def grids(s: dict) -> list[Grid]:
    """Four grids: the runs at B=1024 with a constant lr (``large``, ``x10``, ``sqrt``) share one
    grid, so they train as one vmapped cohort (one compiled program instead of three)."""
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), epochs=s["epochs"], momentum=0.0,
                  optimizer="sgd", seeds=s["seeds"])
    lrs, names = learning_rates(s), labels(s)
    large = s["large_batch"]
    return [
        Grid(names["small"], dict(common, batch_size=s["small_batch"], lr=lrs["small"])),
        Grid(constant_label(s), dict(common, batch_size=large, lr=[lrs[r] for r in ("large", "x10", "sqrt")])),
        Grid(names["linear"], dict(common, batch_size=large, lr=lrs["linear"], warmup_epochs=s["warmup_epochs"])),
        Grid(names["switch"], dict(common, batch_size=large, lr=lrs["switch"],
                                   phases=[(switch_epoch(s), s["small_batch"], None)])),
    ]


def _title(s: dict) -> str:
    width = "-".join(str(h) for h in s["hidden"])
    return f"{s['data']} MLP {width}, SGD (no momentum), {s['epochs']} epochs, {s['seeds']} seeds"


def _test_curves(tables, s):
    from batchlab.plots.lr_recovery import accuracy_curves

    return accuracy_curves(tables["curves"], switch_epoch(s), title=f"Test accuracy vs epoch: {_title(s)}")


def _learning_curves(tables, s):
    from batchlab.plots.learning_curves import band_curves

    return band_curves(tables["curves"], "acc", ncols=3, title=f"Train and test accuracy per group: {_title(s)}")


def _final(tables, s):
    from batchlab.plots.lr_recovery import final_accuracy

    return final_accuracy(tables["final"], s["margin"], title=f"Final test accuracy: {_title(s)}")


STUDY = Study(
    name="lr-recovery",
    question="Does a larger learning rate, or switching to a small batch, recover large-batch test accuracy?",
    source=analysis.SOURCE,
    defaults=dict(data="mnist", hidden=(128, 128), epochs=60, seeds=4, small_batch=64, large_batch=1024, lr=0.01,
                  boost=10.0, warmup_epochs=2.0, switch_fraction=0.5, margin=0.01),
    quick=dict(data="digits", hidden=(64,), epochs=20, seeds=3),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("test_accuracy_curves", _test_curves, "curves"),
             FigureSpec("learning_curves_acc", _learning_curves, "curves"),
             FigureSpec("final_test_accuracy", _final, "final")),
    findings=analysis.findings,
    notes=analysis.notes,
    minutes=(4, 0.4),
    limits=dict(boost=(1e-30, None), switch_fraction=(1e-9, 1.0), margin=(0.0, 1.0),
                small_batch=(1, "large_batch")),
)
