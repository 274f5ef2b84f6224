"""Shen (2018): Adam vs SGD — weight norm and test accuracy by batch size (``science.md`` 3.4).

An MLP on MNIST (5,000 real images, 4,000 train / 1,000 test), batch-mean cross-entropy,
trained with plain SGD (no momentum) and with Adam (optax defaults b1 0.9, b2 0.999,
eps 1e-8) at each B in ``batch_sizes``; each optimizer keeps one learning rate for every B
(``sgd_lrs``: Shen's 0.01 and the 0.1 that suits large batches; ``adam_lr``: Adam's usual
default; none tuned). Both start from the same
initial weights for a given seed. Measured: ||theta_t||_2 at every update (per-step
instrument ``weight_norm``), ||theta_0||_2 and ||theta_T||_2 on the saved parameters
(checkpoint instrument), the distance travelled ``dist_init`` and test accuracy
(``analysis/optimizer.py``).
"""

from __future__ import annotations

from batchlab.analysis import optimizer as analysis
from batchlab.analysis.steps import parameter_norm
from batchlab.instruments.checkpoint import Checkpoint, CheckpointInstrument
from batchlab.studies.base import FigureSpec, Grid, Study


def grids(s: dict) -> list[Grid]:
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), epochs=s["epochs"], seeds=s["seeds"],
                  instruments=("weight_norm", "dist_init"))
    # SGD's learning rates share a grid, so they train as one vmapped cohort per B.
    return [grid for b in s["batch_sizes"] for grid in (
        Grid(f"SGD, B={b}", dict(common, optimizer="sgd", batch_size=b, lr=list(s["sgd_lrs"]))),
        Grid(f"Adam, B={b}", dict(common, optimizer="adam", batch_size=b, lr=s["adam_lr"])))]


def measure_norm(ckpt: Checkpoint) -> list[dict]:
    """||theta||_2 of the saved parameters (all of them flattened)."""
    return [{"weight_norm": parameter_norm(ckpt.params)}]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    return [CheckpointInstrument(analysis.NORM, (0, s["epochs"]), measure_norm)]


def _curves(tables, s):
    from batchlab.plots.distance import optimizer_curves

    return optimizer_curves(tables["weights"], tables["accuracy"],
                            tables["runs"].rename(columns={"initial_norm": "weight_norm"}), s["tolerance"],
                            f"SGD (no momentum) vs Adam (b1 0.9, b2 0.999) — {s['data']}, MLP "
                            f"{'-'.join(map(str, s['hidden']))}, batch-mean loss, {s['seeds']} seeds")


STUDY = Study(
    name="optimizer",
    question="Does Adam end farther from the initial weights' norm, and lower in test accuracy, than SGD?",
    source=analysis.SOURCE,
    defaults=dict(data="mnist", hidden=(128, 128), batch_sizes=(64, 1024), epochs=20, seeds=3, sgd_lrs=(0.01, 0.1),
                  adam_lr=0.001, tolerance=0.10, points=150),
    quick=dict(data="digits", hidden=(32,), batch_sizes=(32, 512), epochs=10, seeds=2),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("weight_norm_and_accuracy", _curves, "weights"),),
    findings=analysis.findings,
    checkpoints=checkpoints,
    notes=analysis.notes,
    steps=True,
    minutes=(1.3, 0.3),
    limits=dict(sgd_lrs=(1e-30, None), adam_lr=(1e-30, None), tolerance=(0.0, None), points=(2, None)),
)
