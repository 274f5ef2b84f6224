"""The ``noise`` command: gradient noise at checkpoints of a real run (``science.md`` section 3.2).

One run trains with the user's settings and keeps its parameters at the checkpoint epochs; each
checkpoint is measured as the gradient-norm study measures its own
(``studies/gradient_noise.py``: ||G||^2, tr(Sigma), B_simple from the per-sample gradients of a
pool of training rows, Monte-Carlo batch-gradient norms for every B against theory, and the
Hessian's sharpness). The measurements are stored beside the run; the two tables (CSV) and the
figure go to ``--out``. It is a measurement of the user's own run, not a study: it checks no
source's claim, so it writes no findings and no study record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from batchlab.cli import DEFAULT_DB, MODEL_HELP, app, console, say
from batchlab.errors import BatchlabError

if TYPE_CHECKING:
    import pandas as pd

    from batchlab.figure_helpers import FigureDrawer

# The table printed after the run: (column title, key of the checkpoint's statistics, format).
MAX_TRIALS = 1_000_000  # random batches per batch size: more is a typo, not an experiment (they take time)
COLUMNS = [("epoch", "epoch", "{:.0f}"), ("||G||^2", "grad_sq", "{:.4g}"), ("tr(Sigma)", "trace", "{:.4g}"),
           ("B_simple", "noise_scale", "{:.4g}"), ("mean ||g_i||", "mean_sample_norm", "{:.4g}"),
           ("mean cos(g_i,g_j)", "mean_cosine", "{:.4f}"), ("exponent |g_B|^2 ~ B^k", "sq_norm_exponent", "{:.3f}")]
SHARPNESS_COLUMNS = [("lambda_max", "lambda_max", "{:.4g}"), ("tr(H)", "hessian_trace", "{:.4g}")]


@app.command()
def noise(
    data: str = typer.Option("digits", help="built-in name or a .npz/.csv file"),
    model: str = typer.Option("mlp", help="mlp, logreg, cnn, or " + MODEL_HELP),
    batch_size: str = typer.Option("64", "--batch-size", "-b", help="batch size of the training run"),
    lr: float = typer.Option(0.01, help="learning rate of the training run"),
    momentum: float = typer.Option(0.0, help="SGD momentum of the training run"),
    hidden: str = typer.Option("50", help="MLP hidden widths"),
    at_epochs: str = typer.Option("2,30", help="checkpoint epochs: '2,30' (0 = before training), 'every:10' "
                                               "or 'log:6' (the last two with --epochs)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="length of the training run "
                                                                      "(default: the last checkpoint)"),
    batch_sizes: str = typer.Option("1:1024", help="batch sizes to measure: list, a:b powers of two, full"),
    trials: int = typer.Option(1000, help="random batches per batch size"),
    reduction: str = typer.Option("sum,mean", help="loss over the batch: sum, mean or both"),
    sampling: str = typer.Option("without", help="batches drawn without or with replacement, or both"),
    pool: Optional[int] = typer.Option(None, help="a random pool of this many training rows (default: all, at most 4096)"),
    seed: int = typer.Option(0),
    sharpness: Optional[bool] = typer.Option(None, "--sharpness/--no-sharpness",
                                             help="also measure Hessian lambda_max and trace (default: yes, "
                                                  "except for PyTorch models)"),
    task: Optional[str] = typer.Option(None, help="classification or regression; default: the data's own"),
    label: str = typer.Option("label", help="label column of a CSV file"),
    out: Path = typer.Option(Path("results/noise"), help="folder for the figure, CSVs and table"),
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store for the training run"),
    wide: bool = typer.Option(False, "--wide", help="tables as wide as they need, whatever the terminal"),
) -> None:
    """Gradient noise at checkpoints of a real run: batch-gradient norm vs B, ||G||^2, tr(Sigma), B_simple."""
    from batchlab.figure_helpers import FigureDrawer

    with FigureDrawer() as drawer:  # first: its helpers are forked before JAX is imported
        from batchlab.instruments.base import parse_epoch_schedule

        checkpoints = parse_epoch_schedule(at_epochs, epochs)
        output = measure_noise(out, data=data, model=model, batch_size=batch_size, lr=lr, momentum=momentum,
                               at_epochs=checkpoints, epochs=epochs, batch_sizes=batch_sizes, trials=trials,
                               reductions=tuple(r.strip() for r in reduction.split(",")), sampling=sampling,
                               pool=pool, seed=seed, hidden=hidden, sharpness=sharpness, db=db, task=task,
                               label=label, drawer=drawer)
    pool_size = int(output.table["pool"].iloc[0])
    _print_table(output.table, f"gradient noise of {data} {model} (pool of {pool_size} rows)", wide)
    say("wrote: " + ", ".join(str(f) for f in output.files))


def _print_table(statistics: "pd.DataFrame", title: str, wide: bool = False) -> None:
    """One row per checkpoint: its gradient statistics (and sharpness, when measured)."""
    from rich.table import Table

    table = Table(title=title)
    columns = COLUMNS + (SHARPNESS_COLUMNS if "lambda_max" in statistics else [])
    for name, _, _ in columns:
        table.add_column(name, justify="right")
    for row in statistics.to_dict("records"):
        table.add_row(*[fmt.format(row[key]) for _, key, fmt in columns])
    console(wide).print(table)


@dataclass
class NoiseOutput:
    table: "pd.DataFrame"  # one row per checkpoint
    points: "pd.DataFrame"  # one row per checkpoint x sampling x reduction x B
    files: list[Path]


def measure_noise(out: str | Path, *, data: str = "digits", model: str = "mlp", batch_size=64, lr: float = 0.01,
                  momentum: float = 0.0, at_epochs=(2, 30), batch_sizes="1:1024", trials: int = 1000,
                  reductions=("sum", "mean"), sampling: str = "without", pool: int | None = None, seed: int = 0,
                  hidden=(50,), sharpness: bool | None = None, epochs: int | None = None, db=None, progress=None,
                  task: str | None = None, label: str = "label", drawer: "FigureDrawer | None" = None
                  ) -> NoiseOutput:
    """Train one run (SGD at ``lr``, ``momentum``) to the last of ``at_epochs``, measure the
    gradient noise at each of them, store the measurements with the run (if ``db``) as
    ``gradient_statistics`` and ``batch_gradient_norms``, and write the tables and the figure
    to ``out``. Every setting is checked before anything trains."""
    from batchlab.api import prepare, run_configs
    from batchlab.paths import check_writable_dir
    from batchlab.studies.gradient_noise import check_stateless

    at_epochs, epochs = _check_measurement(at_epochs, trials, sampling, reductions, epochs)
    configs, dataset, net = prepare(data, model, batch_size=batch_size, epochs=epochs, lr=lr,
                                    momentum=momentum, seeds=[seed], hidden=hidden, activation="relu",
                                    init="he_uniform", dropout=0.0, standardize=None, test_fraction=0.2,
                                    label=label, task=task)
    rows, sizes = _pool_and_sizes(dataset.n_train, pool, batch_sizes, seed)
    check_stateless(net)
    if sharpness is None:  # Hessian-vector products are the JAX engine's; a PyTorch model skips them
        sharpness = getattr(net, "backend", "jax") == "jax"
    check_writable_dir(out, "output folder")
    run = run_configs(configs, dataset, net, db=db, force=True, progress=progress, checkpoints=at_epochs).runs[0]
    missing = [e for e in at_epochs if e not in run.checkpoints]
    if missing:
        raise BatchlabError(f"the run stopped ({run.status}) before checkpoint epoch(s) {missing}")
    table_frame, points_frame = _measure_checkpoints(
        run, net, dataset.x_train[rows], dataset.y_train[rows], db, at_epochs, sizes=sizes, trials=trials,
        reductions=reductions, sampling=sampling, seed=seed, lr=lr, sharpness=sharpness)
    files = _write(Path(out), table_frame, points_frame,
                   title=f"{dataset.name} {model}, trained at B={configs[0].batch_size}, lr={lr}",
                   loss_unit="squared target units" if dataset.task == "regression" else "nats", drawer=drawer)
    return NoiseOutput(table_frame, points_frame, files)


def _check_measurement(at_epochs, trials: int, sampling: str, reductions, epochs: int | None
                       ) -> tuple[tuple[int, ...], int]:
    """The checkpoint epochs (sorted, unique) and the run's length, once every measurement
    setting is checked."""
    from batchlab.studies.gradient_noise import SAMPLING

    at_epochs = tuple(sorted({int(e) for e in at_epochs}))
    if not at_epochs or at_epochs[0] < 0:
        raise BatchlabError(f"checkpoint epochs must be >= 0, got {at_epochs}")
    if not 2 <= trials <= MAX_TRIALS:
        raise BatchlabError(f"trials must lie in [2, {MAX_TRIALS:,}], got {trials:,}")
    if sampling not in SAMPLING:
        raise BatchlabError(f"unknown sampling {sampling!r}: choose without, with or both")
    for r in reductions:
        if r not in ("sum", "mean"):
            raise BatchlabError(f"unknown reduction {r!r}: choose sum and/or mean")
    epochs = max(max(at_epochs), 1) if epochs is None else epochs
    if max(at_epochs) > epochs:
        raise BatchlabError(f"checkpoint epoch {max(at_epochs)} is after the run's last epoch {epochs}")
    return at_epochs, epochs


def _pool_and_sizes(n: int, pool: int | None, batch_sizes, seed: int):
    """The pool's training rows and the batch sizes to measure, checked against N and the pool
    before the run trains (``full`` = the whole pool)."""
    from batchlab.parsing import FULL, parse_batch_sizes
    from batchlab.studies.gradient_noise import DEFAULT_POOL, pool_rows

    if pool is not None and (isinstance(pool, bool) or not isinstance(pool, int) or pool < 2):
        raise BatchlabError(f"pool must be an integer >= 2 rows, got {pool!r}")
    rows = pool_rows(n, DEFAULT_POOL if pool is None else pool, seed)
    sizes = [len(rows) if b == FULL else b for b in parse_batch_sizes(batch_sizes)]
    too_big = [b for b in sizes if b > len(rows)]
    if too_big:
        whole = f" (all N={n} rows)" if len(rows) == n else f" (of N={n})"
        raise BatchlabError(f"batch size(s) {too_big} exceed the pool of {len(rows)} training rows{whole}")
    return rows, sizes


def _measure_checkpoints(run, net, x, y, db, at_epochs: tuple[int, ...], *, sizes: list[int], seed: int,
                        **measure) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """Each checkpoint of ``run`` measured on the pool's rows ``x``, ``y`` and stored beside the
    run (when ``db``): (one row of statistics per checkpoint, the batch-gradient norms per
    checkpoint, sampling, reduction and B). ``measure``: :func:`measure_checkpoint`'s options."""
    import jax.numpy as jnp
    import pandas as pd

    from batchlab.studies.gradient_noise import measure_checkpoint

    x, y = jnp.asarray(x), jnp.asarray(y)
    table, points = [], []
    for epoch in at_epochs:
        row, rows_of_points = measure_checkpoint(net, run.checkpoints[epoch], x, y, sizes, seed=seed + epoch,
                                                 **measure)
        table.append({"epoch": epoch, **row})
        points += [{"epoch": epoch, **p} for p in rows_of_points]
        _store(db, run.run_id, epoch, row, rows_of_points)
    return pd.DataFrame(table), pd.DataFrame(points)


def _store(db, run_id: str, epoch: int, row: dict, points: list[dict]) -> None:
    """One checkpoint's measurements, beside its run in the store (when there is one)."""
    if db is None:
        return
    from batchlab.store import Store

    with Store(db) as store:
        store.write_measurements(run_id, "gradient_statistics", epoch, [row])
        store.write_measurements(run_id, "batch_gradient_norms", epoch, points)


def _write(out: Path, table: "pd.DataFrame", points: "pd.DataFrame", title: str, loss_unit: str = "nats",
           drawer: "FigureDrawer | None" = None) -> list[Path]:
    """The two tables (CSV) and the figure (PNG + SVG; by ``drawer``'s helper processes, if given),
    replacing the previous ones together once all are written (``paths.OutputSet``)."""
    from batchlab.figure_helpers import FigureDrawer
    from batchlab.paths import OutputSet, shown

    drawer = drawer or FigureDrawer(helpers=0)
    with OutputSet(out) as outputs:
        files = [outputs.write_csv("noise_table.csv", table), outputs.write_csv("noise_points.csv", points)]
        figure = drawer.draw("batchlab.plots.gradient_noise:gradient_norm_figure", points, title, loss_unit,
                             path=outputs.path("gradient_norm_vs_batch"))
        files += drawer.files([figure])[0]
    return [shown(f) for f in files]
