"""Commands that train: ``plan`` (what N, B and epochs make), ``train``, ``noise``, ``sweep``."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from batchlab.cli import DEFAULT_DB, DEFAULT_OUT, MODEL_HELP, app, expect_interrupts, progress_bar
from batchlab.cli.options import settings_options
from batchlab.errors import BatchlabError
from batchlab.runs_table import print_runs
from batchlab.settings import SWEEP, SWEEP_DEFAULTS, TRAINING


@app.command()
def plan(n: int = typer.Option(..., "--n", help="training samples N"),
         batch_size: str = typer.Option(..., "--batch-size", "-b", help="B, 'full', or a list '1,32,full'"),
         epochs: int = typer.Option(..., "--epochs", "-e"),
         drop_last: bool = typer.Option(False, "--drop-last", help="drop the last partial batch (MATLAB)")) -> None:
    """How N, B and epochs turn into updates and samples seen."""
    from batchlab.budget import plan as make_plan
    from batchlab.parsing import parse_batch_sizes, resolve_batch_size

    if n < 1:
        raise BatchlabError(f"N must be >= 1, got {n}")
    for b in parse_batch_sizes(batch_size):
        p = make_plan(n, resolve_batch_size(b, n), epochs, drop_last)
        prefix = f"B={p.batch_size}: " if "," in batch_size or ":" in batch_size else ""
        typer.echo(prefix + p.describe())


@app.command()
@settings_options(TRAINING)
def train(
    given: dict,
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
    out: Path = typer.Option(Path(DEFAULT_OUT), help="folder for figures and tables"),
    force: bool = typer.Option(False, help="recompute runs already in the store"),
    wide: bool = typer.Option(False, "--wide", help="show every column of the table, whatever the terminal width"),
) -> None:
    """Train every batch size x optimizer x lr x momentum x weight decay x seed; store the
    runs; print a table; draw learning curves."""
    from batchlab.figure_helpers import FigureDrawer

    with FigureDrawer() as drawer:  # first: its helpers are forked before JAX is imported
        from batchlab.api import prepare, run_configs
        from batchlab.config import score_name
        from batchlab.paths import check_writable_dir
        from batchlab.store import summary_rows

        configs, dataset, net = prepare(**given)
        check_writable_dir(out, "--out folder")
        expect_interrupts(db)
        for note in getattr(dataset, "notes", ()) or ():
            typer.echo(f"note: {note}", err=True)
        total = sum(c.epochs for c in configs)
        bar, advance = progress_bar(total, f"training {len(configs)} run(s)")
        start = time.perf_counter()
        with bar:
            result = run_configs(configs, dataset, net, db=db, force=force, progress=advance)
        print_runs(summary_rows(result.runs), f"{dataset.name}: {len(configs)} run(s), N={dataset.n_train}, "
                                              f"{time.perf_counter() - start:.1f} s", wide)
        if result.skipped:
            typer.echo(f"{len(result.skipped)} run(s) were already in {db} and were not recomputed (--force to redo).")
        # The figures need the per-epoch records only (not the parameters); pandas is imported
        # by the helpers that draw them, not here.
        records = [dataclasses.replace(run, params=None, steps={}, checkpoints={}) for run in result.runs]
        for metric in (score_name(dataset.task), "loss"):
            drawer.draw("runs_learning_curves", records, metric, path=out / f"learning_curves_{metric}")
        pngs = [str(f) for figure in drawer.files() for f in figure if f.suffix == ".png"]
        typer.echo(f"runs stored in {db}; figures: {', '.join(pngs)}")


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
) -> None:
    """Gradient noise at checkpoints of a real run: batch-gradient norm vs B, ||G||^2, tr(Sigma), B_simple."""
    from rich.console import Console
    from rich.table import Table

    from batchlab.figure_helpers import FigureDrawer

    with FigureDrawer() as drawer:  # first: its helpers are forked before JAX is imported
        from batchlab.instruments.base import parse_epoch_schedule
        from batchlab.studies import gradient_noise

        checkpoints = parse_epoch_schedule(at_epochs, epochs)
        output = gradient_noise.run(out, data=data, model=model, batch_size=batch_size, lr=lr, momentum=momentum,
                                    at_epochs=checkpoints, epochs=epochs, batch_sizes=batch_sizes, trials=trials,
                                    reductions=tuple(r.strip() for r in reduction.split(",")), sampling=sampling,
                                    pool=pool, seed=seed, hidden=hidden, sharpness=sharpness, db=db, task=task,
                                    label=label, drawer=drawer)
    table = Table(title=f"gradient noise of {data} {model} (pool of {int(output.table['pool'].iloc[0])} rows)")
    columns = [("epoch", "epoch", "{:.0f}"), ("||G||^2", "grad_sq", "{:.4g}"), ("tr(Sigma)", "trace", "{:.4g}"),
               ("B_simple", "noise_scale", "{:.4g}"), ("mean ||g_i||", "mean_sample_norm", "{:.4g}"),
               ("mean cos(g_i,g_j)", "mean_cosine", "{:.4f}"), ("exponent |g_B|^2 ~ B^k", "sq_norm_exponent", "{:.3f}")]
    if "lambda_max" in output.table:
        columns += [("lambda_max", "lambda_max", "{:.4g}"), ("tr(H)", "hessian_trace", "{:.4g}")]
    for name, _, _ in columns:
        table.add_column(name, justify="right")
    for row in output.table.to_dict("records"):
        table.add_row(*[fmt.format(row[key]) for _, key, fmt in columns])
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    typer.echo("wrote: " + ", ".join(str(f) for f in output.files))


@app.command()
@settings_options(SWEEP + TRAINING, defaults=SWEEP_DEFAULTS,
                  helps={"epochs": "shorthand for --budget epochs=N"})
def sweep(
    given: dict,
    config: Optional[Path] = typer.Option(None, help="TOML file with the sweep's settings, keys as the options' "
                                                      "names (options given here override it)"),
    executor: str = typer.Option("auto", "--executor", "--backend",
                                 help="auto (= local), local (threads of this process), processes or ray"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT (default: a local Ray)"),
    workers: Optional[int] = typer.Option(
        None, help="cohorts trained side by side: threads (local), worker processes, or Ray tasks "
                   "(default: one per core; Ray: at most 2)"),
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
) -> None:
    """Sweep batch size x learning rate x seeds (and any other axis); re-running the same
    sweep resumes it."""
    from batchlab.sweep.run import prepare_sweep, run_sweep
    from batchlab.sweep.spec import SweepSpec, read_spec

    spec = read_spec(config, **given) if config is not None else SweepSpec(**given)
    prepared = prepare_sweep(spec)
    expect_interrupts(db)
    bar, advance = progress_bar(sum(c.epochs for c in prepared[0]), f"sweep {spec.name}")
    with bar:
        result = run_sweep(spec, db, executor=executor, workers=workers, address=address, progress=advance,
                           prepared=prepared)
    typer.echo(f"sweep {result.name!r}: {len(result.run_ids)} runs, {result.trained} trained now, "
               f"{result.skipped} already stored in {db}. Next: batchlab analyze --sweep {result.name}")
