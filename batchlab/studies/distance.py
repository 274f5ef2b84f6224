"""Shen (2018): how far from the initial weights each batch size travels (``science.md`` 3.3).

Plain SGD (no momentum), batch-mean cross-entropy, one fixed learning rate for every B (not
re-tuned per B, on purpose: the claim is about a fixed lr), an MLP on MNIST (5,000 real
images, 4,000 train / 1,000 test). Per-step instruments ``dist_init`` = ||theta_t - theta_0||_2
and ``update_norm`` = ||theta_{t+1} - theta_t||_2 (all parameters flattened). Runs:
- the sweep: every B in ``batch_sizes`` at ``lr`` for ``epochs`` epochs;
- the largest B at ``large_lr`` for ``epochs`` epochs (a larger lr);
- the largest B at ``lr`` for ``long_epochs`` epochs (more epochs).
Measured (``analysis/distance.py``): distance at the end of the epoch budget, at a fixed
number of updates and at equal samples seen; its spread over seeds; the tail of the update
sizes; test accuracy.
"""

from __future__ import annotations

from batchlab.analysis import distance as analysis
from batchlab.analysis.distance import LARGE_LR, LONG, SWEEP, fixed_step
from batchlab.studies.base import FigureSpec, Grid, Study


def labels(s: dict) -> dict[str, str]:
    """Group label of each role (the sweep's groups are labelled by their B)."""
    big = max(s["batch_sizes"])
    return {LARGE_LR: f"B={big}, lr {s['large_lr']:g}", LONG: f"B={big}, lr {s['lr']:g}, {s['long_epochs']} epochs"}


def grids(s: dict) -> list[Grid]:
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), momentum=0.0, seeds=s["seeds"],
                  instruments=("dist_init", "update_norm"))
    big, names = max(s["batch_sizes"]), labels(s)
    sweep = [Grid(f"B={b}, lr {s['lr']:g}", dict(common, batch_size=b, lr=s["lr"], epochs=s["epochs"]))
             for b in s["batch_sizes"]]
    return sweep + [Grid(names[LARGE_LR], dict(common, batch_size=big, lr=s["large_lr"], epochs=s["epochs"])),
                    Grid(names[LONG], dict(common, batch_size=big, lr=s["lr"], epochs=s["long_epochs"]))]


def _title(s: dict, what: str) -> str:
    return (f"{what} — {s['data']}, MLP {'-'.join(map(str, s['hidden']))}, plain SGD (batch-mean loss), "
            f"{s['seeds']} seeds")


def _curves(tables, s):
    from batchlab.plots.distance import distance_curves

    big = max(s["batch_sizes"])
    note = (f"B={big}, lr {s['lr']:g} lies under its {s['long_epochs']}-epoch continuation (the same run up to "
            f"epoch {s['epochs']}); against updates the lr {s['lr']:g} curves overlap; S: the fixed-step comparison")
    return distance_curves(tables["curves"], _title(s, "Distance from the initial weights"),
                           fixed_step(tables["runs"], s), note)


def _spread(tables, s):
    from batchlab.plots.distance import spread_and_tails

    sweep = tables["groups"][tables["groups"].role == SWEEP].sort_values("batch_size")
    return spread_and_tails(tables["spread"], tables["update_sizes"], sweep, s["tail_quantile"],
                            _title(s, f"At equal samples seen, lr {s['lr']:g}"))


def _far(tables, s):
    from batchlab.plots.distance import far_solutions

    return far_solutions(tables["accuracy"], tables["runs"], _title(s, "Far solutions and test accuracy"))


STUDY = Study(
    name="distance",
    question="How far from the initial weights does each batch size travel, and can a large batch reach "
             "the far solutions with a larger lr or more epochs?",
    source=analysis.SOURCE,
    defaults=dict(data="mnist", hidden=(128, 128), batch_sizes=(32, 64, 256, 1024), lr=0.01, large_lr=0.1,
                  epochs=20, long_epochs=80, seeds=5, tail_quantile=0.95, step_tolerance=0.10, fixed_step=0,
                  points=150),
    quick=dict(data="digits", hidden=(32,), batch_sizes=(32, 256, 1024), lr=0.05, large_lr=0.5, epochs=4,
               long_epochs=16, seeds=3),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("distance_curves", _curves, "curves"),
             FigureSpec("spread_and_update_tails", _spread, "spread"),
             FigureSpec("far_solutions", _far, "groups")),
    findings=analysis.findings,
    notes=analysis.notes,
    steps=True,
    minutes=(2.5, 0.25),
    limits=dict(large_lr=(1e-30, None), long_epochs=(1, None), tail_quantile=(0.5, 1.0),
                step_tolerance=(0.0, None), fixed_step=(0, None), points=(2, None)),
)
