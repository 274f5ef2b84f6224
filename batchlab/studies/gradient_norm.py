"""Shen (2018): do per-sample gradients compete? Gradient norm vs batch size (``science.md`` 3.2, 4).

The "gradient competition" hypothesis says the per-sample gradients of a batch cancel, so a
bigger batch gives a smaller gradient per sample. Shen measured the opposite. One training
run (MNIST 5k subset, MLP 784-256-256-10 ReLU, SGD lr 0.01 at B=64, batch-mean loss) keeps its
parameters after 2 epochs (early regime) and 30 epochs (late regime). At each checkpoint
``measure_checkpoint`` (``studies/gradient_noise.py``) takes the per-sample gradients of a pool
of P training rows and draws ``trials`` random batches (without replacement from the pool)
for every B in 1..1024; the squared norm of each batch's summed gradient is exact from the
Gram matrix. Batch-mean norms are the batch-sum norms divided by B. Theory:
E||g_B||^2 = ||G||^2 + tr(Sigma)/B x (P-B)/(P-1) (batch mean; x B^2 for the batch sum).
The analysis and findings: ``analysis/gradient_norm.py``.
"""

from __future__ import annotations

from batchlab.analysis import gradient_norm as analysis
from batchlab.analysis.gradient_norm import LABEL, instrument_name
from batchlab.errors import BatchlabError
from batchlab.instruments.checkpoint import Checkpoint, CheckpointInstrument
from batchlab.studies.base import FigureSpec, Grid, Study
from batchlab.studies.gradient_noise import measure_checkpoint, pool_rows

SAMPLINGS = ("without", "with")


def grids(s: dict) -> list[Grid]:
    """The one training run whose checkpoints are measured."""
    return [Grid(LABEL, dict(data=s["data"], model="mlp", hidden=s["hidden"], batch_size=s["batch_size"],
                             epochs=max(s["at_epochs"]), lr=s["lr"], momentum=s["momentum"], seeds=[s["seed"]]))]


def check(s: dict) -> None:
    """Reject measurement settings before anything trains."""
    from batchlab.data import load_dataset, resolve_data_config

    if s["sampling"] not in SAMPLINGS:
        raise BatchlabError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {s['sampling']!r}")
    if s["trials"] < 2:
        raise BatchlabError(f"trials must be >= 2 (findings need intervals), got {s['trials']}")
    if len(s["at_epochs"]) < 2 or min(s["at_epochs"]) < 1:
        raise BatchlabError(f"at_epochs needs two or more epochs >= 1 (early and late), got {s['at_epochs']}")
    pool = min(load_dataset(resolve_data_config(s["data"])).n_train, s["pool"])
    bad = [b for b in s["batch_sizes"] if not 1 <= b <= pool]
    if bad or len(s["batch_sizes"]) < 2:
        raise BatchlabError(f"batch sizes must be two or more values in 1..{pool} (the pool of rows), got "
                            f"{s['batch_sizes']}")


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    check(s)
    return [CheckpointInstrument(instrument_name(s), tuple(sorted(set(s["at_epochs"]))), _measure(s))]


def _measure(s: dict):
    def measure(cp: Checkpoint) -> list[dict]:
        """Rows of three kinds: the checkpoint's statistics, the per-B summary points of
        ``measure_checkpoint``, and the per-trial squared batch-sum norms behind them."""
        import jax.numpy as jnp

        from batchlab.instruments import gradients

        rows = pool_rows(cp.dataset.n_train, s["pool"], s["seed"])
        x, y = jnp.asarray(cp.dataset.x_train[rows]), jnp.asarray(cp.dataset.y_train[rows])
        sizes, seed = [int(b) for b in s["batch_sizes"]], s["seed"] + cp.epoch
        stats, points = measure_checkpoint(cp.model, cp.params, x, y, sizes, trials=s["trials"],
                                           reductions=("sum", "mean"), sampling=s["sampling"], seed=seed,
                                           lr=cp.config.optimizer.lr, sharpness=s["sharpness"])
        # measure_checkpoint keeps only summaries; the findings need the trials themselves. Same
        # Gram matrix, same seed and sampling: the same batches are drawn again.
        k = gradients.gram_matrix(cp.model, cp.params, {}, x, y)
        draws = gradients.monte_carlo(k, sizes, s["trials"], seed, replace=s["sampling"] == "with")
        return ([{"kind": "statistics", **stats}] + [{"kind": "point", **p} for p in points]
                + [{"kind": "trials", "batch_size": b, "sq_norms_sum": draws[b].tolist()} for b in sizes])
    return measure


def _describe(s: dict) -> str:
    widths = "-".join(str(h) for h in s["hidden"])
    momentum = f", momentum {s['momentum']:g}" if s["momentum"] else ""
    return f"{s['data']} MLP (hidden {widths}, ReLU), SGD lr {s['lr']:g}{momentum} at B={s['batch_size']}"


def _figure(tables, s):
    from batchlab.plots.gradient_noise import gradient_norm_figure

    epochs = " and ".join(str(e) for e in sorted(set(s["at_epochs"])))
    pool = int(tables["statistics"].pool.iloc[0])
    return gradient_norm_figure(tables["points"], (
        f"Gradient norm vs batch size: {_describe(s)}, checkpoints after epochs {epochs}\n"
        f"{s['trials']} random batches per B from a pool of P={pool} training rows; "
        "markers: RMS over the trials, band: 5%..95% of the trials, dashed: theory"))


def _per_sample_figure(tables, s):
    from batchlab.plots.gradient_norm import sq_norm_per_sample_figure

    return sq_norm_per_sample_figure(tables["theory_check"], tables["statistics"], (
        f"Squared batch-sum gradient norm vs theory: {_describe(s)}, {s['trials']} batches per B"))


STUDY = Study(
    name="gradient-norm",
    question="Do per-sample gradients compete: does a bigger batch give a smaller gradient per sample?",
    source=analysis.SOURCE,
    defaults=dict(data="mnist", hidden=(256, 256), batch_size=64, lr=0.01, momentum=0.0, seed=0,
                  at_epochs=(2, 30), trials=1000, batch_sizes=tuple(2 ** i for i in range(11)), pool=4096,
                  sampling="without", sharpness=False, theory_tolerance=0.1),
    quick=dict(data="digits", at_epochs=(1, 3), trials=200, batch_sizes=tuple(2 ** i for i in range(9))),
    grids=grids,
    checkpoints=checkpoints,
    analyse=analysis.analyse,
    figures=(FigureSpec("gradient_norm_vs_batch", _figure, "points"),
             FigureSpec("sq_norm_per_sample_vs_batch", _per_sample_figure, "theory_check")),
    findings=analysis.findings,
    notes=analysis.notes,
    minutes=(1.4, 0.2),
    limits=dict(at_epochs=(0, None), trials=(1, None), pool=(2, None), theory_tolerance=(0.0, None)),
)
