"""Critical batch size: steps to a target vs B with the lr tuned per B, and whether the simple
noise scale measured during training predicts it (``science.md`` sections 4 and 7).

Digits (1437 train / 360 test), MLP 64-64(relu)-10, SGD with momentum 0.9, batch-mean
cross-entropy; the partial last batch of an epoch is dropped, so every step uses exactly B
samples and E = B S holds. For every B in 8..1024 and every lr of a grid, several seeds train
for about ``step_budget`` updates (at most ``max_epochs`` epochs). Per run: the steps to the target (censored when never
reached); per B: the best lr (``analysis/selection.py``: fewest mean steps among the lrs where every
seed is usable and ends at the target);
then the fit S(B) = S_min (1 + B_crit / B), repeated on each seed for its intervals
(McCandlish et al. 2018; Shallue et al. 2019), and the operational critical batch size, where steps exceed perfect
scaling by 20% (Zhang et al. 2025). The runs at ``noise_batch`` also record the online
two-batch estimate of B_simple every step; those at ``noise_lr`` are measured exactly at
checkpoints (per-sample gradients over a pool of training rows, via their Gram matrix). The
analysis and findings: ``analysis/critical_batch.py``.
"""

from __future__ import annotations

import math

from batchlab import budget
from batchlab.analysis import critical_batch as analysis
from batchlab.analysis.critical_batch import INSTRUMENT, label
from batchlab.errors import BatchlabError
from batchlab.instruments.checkpoint import Checkpoint, CheckpointInstrument
from batchlab.studies.base import FigureSpec, Grid, Study
from batchlab.studies.gradient_noise import pool_rows


def n_train(s: dict) -> int:
    """Training rows of the study's data (sets each B's epoch count from the step budget)."""
    from batchlab.data import load_dataset, resolve_data_config

    return load_dataset(resolve_data_config(s["data"])).n_train


def epochs_for(b: int, n: int, s: dict) -> int:
    """Epochs that give about ``step_budget`` updates at batch size B, capped at ``max_epochs``
    (large batches need few steps but many epochs; small ones the reverse)."""
    epochs = min(s["max_epochs"], math.ceil(s["step_budget"] / budget.steps_per_epoch(n, b, drop_last=True)))
    if b == s["noise_batch"]:
        epochs = max(epochs, max(s["noise_epochs"]))
    return max(epochs, 1)


def grids(s: dict) -> list[Grid]:
    if s["noise_batch"] not in s["batch_sizes"]:
        raise BatchlabError(f"noise_batch={s['noise_batch']} must be one of batch_sizes {s['batch_sizes']}")
    if not any(math.isclose(s["noise_lr"], lr) for lr in s["lrs"]):
        raise BatchlabError(f"noise_lr={s['noise_lr']} must be one of lrs {s['lrs']}")
    n = n_train(s)
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), momentum=s["momentum"],
                  lr=list(s["lrs"]), seeds=s["seeds"], drop_last=True)
    out = []
    for b in sorted(s["batch_sizes"]):
        extra = dict(instruments=["noise_scale"]) if b == s["noise_batch"] else {}
        out.append(Grid(label(b), dict(common, batch_size=b, epochs=epochs_for(b, n, s), **extra)))
    return out


def measure_exact(cp: Checkpoint) -> list[dict]:
    """|G|^2, tr(Sigma) and B_simple from the per-sample gradients of a pool of training rows
    (:func:`batchlab.instruments.gradients.statistics_from_gram`); only the ``noise_lr`` runs
    are measured (the others return no record, which also marks them as done)."""
    if not math.isclose(cp.config.optimizer.lr, cp.settings["noise_lr"]):
        return []
    import jax.numpy as jnp

    from batchlab.instruments.gradients import gram_matrix, statistics_from_gram

    rows = pool_rows(cp.dataset.n_train, cp.settings["pool"], seed=0)
    k = gram_matrix(cp.model, cp.params, {}, jnp.asarray(cp.dataset.x_train[rows]),
                    jnp.asarray(cp.dataset.y_train[rows]))
    return [statistics_from_gram(k)]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    return [CheckpointInstrument(INSTRUMENT, tuple(s["noise_epochs"]), measure_exact, grids=(label(s["noise_batch"]),))]


def _title(s: dict) -> str:
    return (f"{s['data']} MLP {'-'.join(str(h) for h in s['hidden'])}, SGD momentum {s['momentum']:g}, "
            f"lr tuned per B over {len(s['lrs'])} values, {s['seeds']} seeds")


def _to_target(tables, s):
    from batchlab.plots.critical_batch import to_target_with_intervals

    return to_target_with_intervals(tables["per_batch"], tables["fit"].iloc[0], s["target"], _title(s))


def _noise(tables, s):
    from batchlab.plots.critical_batch import noise_over_training

    crossing = tables["at_target"].epochs_to_target.mean()
    title = (f"{_title(s).split(', lr')[0]}: B_simple over training of the runs at B={s['noise_batch']}, "
             f"lr {s['noise_lr']:g} ({s['seeds']} seeds); exact on a pool of <= {s['pool']} training rows")
    return noise_over_training(tables["noise_band"], tables["noise_exact"], tables["noise_online"],
                               tables["fit"].iloc[0], crossing, title)


def _heatmap(tables, s):
    from batchlab.plots.critical_batch import reached_heatmap

    return reached_heatmap(tables["settings"], tables["per_batch"], s["target"], _title(s))


STUDY = Study(
    name="critical-batch",
    question="Where does doubling the batch stop halving the steps, and does the noise scale predict it?",
    source="McCandlish et al. 2018; Shallue et al. 2019; Zhang et al. 2025",
    defaults=dict(data="digits", hidden=(64,), momentum=0.9, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024),
                  lrs=(0.01, 0.03, 0.1, 0.3, 1.0), seeds=3, target="train_loss<=0.1", step_budget=1500,
                  max_epochs=80, noise_batch=32, noise_lr=0.1, noise_epochs=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24),
                  pool=2048, excess=0.2),
    quick=dict(batch_sizes=(16, 64, 256), lrs=(0.03, 0.1, 0.3), seeds=2, step_budget=600, max_epochs=20,
               noise_batch=64, noise_epochs=(0, 1, 2, 4, 8)),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("steps_to_target_vs_batch", _to_target, "per_batch"),
             FigureSpec("noise_scale_over_training", _noise, "noise_exact"),
             FigureSpec("reached_lr_batch", _heatmap, "settings")),
    findings=analysis.findings,
    checkpoints=checkpoints,
    notes=analysis.notes,
    steps=True,
    minutes=(0.9, 0.35),
    limits=dict(lrs=(1e-30, None), step_budget=(1, None), max_epochs=(1, None), noise_lr=(1e-30, None),
                noise_epochs=(0, None), pool=(2, None), excess=(1e-9, None)),
)
