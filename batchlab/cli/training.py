"""Commands that train: ``plan`` (what N, B and epochs make), ``train``, ``sweep``."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from batchlab.cli import DEFAULT_DB, DEFAULT_OUT, MODEL_HELP, app, expect_interrupts, progress_bar
from batchlab.errors import BatchlabError
from batchlab.runs_table import print_runs


@app.command()
def plan(n: int = typer.Option(..., "--n", help="training samples N"),
         batch_size: str = typer.Option(..., "--batch-size", "-b", help="B, 'full', or a list '1,32,full'"),
         epochs: int = typer.Option(..., "--epochs", "-e"),
         drop_last: bool = typer.Option(False, "--drop-last", help="drop the last partial batch (MATLAB)")) -> None:
    """How N, B and epochs turn into updates and samples seen."""
    from batchlab.budget import plan as make_plan
    from batchlab.config import parse_batch_sizes, resolve_batch_size

    if n < 1:
        raise BatchlabError(f"N must be >= 1, got {n}")
    for b in parse_batch_sizes(batch_size):
        p = make_plan(n, resolve_batch_size(b, n), epochs, drop_last)
        prefix = f"B={p.batch_size}: " if "," in batch_size or ":" in batch_size else ""
        typer.echo(prefix + p.describe())


@app.command()
def train(
    data: str = typer.Option("blobs", help="built-in name (blobs, moons, classification, digits, iris, wine, "
                                           "breast_cancer) or a .npz/.csv file"),
    model: str = typer.Option("mlp", help="mlp, logreg, cnn, or " + MODEL_HELP),
    batch_size: str = typer.Option("32", "--batch-size", "-b", help="B in [1, N], 'full', lists '1,32,full', "
                                                                    "ranges '1:1024' (powers of two)"),
    epochs: int = typer.Option(10, "--epochs", "-e"),
    lr: str = typer.Option("0.01", help="learning rate(s), e.g. 0.001,0.01"),
    momentum: str = typer.Option("0", help="SGD momentum value(s) in [0, 1)"),
    seeds: str = typer.Option("1", help="number of seeds (5 -> 0..4) or a list '3,7'"),
    optimizer: str = typer.Option("sgd", help="sgd or adam"),
    nesterov: bool = typer.Option(False, help="Nesterov momentum"),
    reduction: str = typer.Option("mean", help="loss over the batch: mean (Keras/PyTorch) or sum"),
    drop_last: bool = typer.Option(False, "--drop-last", help="drop the last partial batch (MATLAB)"),
    shuffle: str = typer.Option("every-epoch", help="every-epoch, once or never"),
    hidden: str = typer.Option("50", help="MLP hidden widths, e.g. 256,256"),
    activation: str = typer.Option("relu"),
    init: str = typer.Option("he_uniform", help="hidden-layer init: he_uniform, glorot_uniform, he_normal, ..."),
    dropout: float = typer.Option(0.0, help="dropout rate after hidden layers"),
    standardize: Optional[bool] = typer.Option(None, "--standardize/--no-standardize",
                                               help="standardize features (default: per dataset)"),
    test_fraction: float = typer.Option(0.2, help="test split when the data has none"),
    label: str = typer.Option("label", help="label column of a CSV file"),
    task: Optional[str] = typer.Option(None, help="classification or regression (float targets, mean squared "
                                                   "error, R^2 instead of accuracy); default: the data's own"),
    patience: Optional[int] = typer.Option(None, help="early stopping after this many epochs without improvement"),
    monitor: str = typer.Option("test_loss", help="metric early stopping watches"),
    min_delta: float = typer.Option(0.0, help="smallest change that counts as an improvement"),
    restore_best: bool = typer.Option(True, help="early stopping keeps the best epoch's parameters"),
    micro_batch: Optional[int] = typer.Option(None, help="largest forward pass; larger batches accumulate "
                                                         "gradients (same update)"),
    init_seed: Optional[int] = typer.Option(None, help="fix the init seed across runs"),
    data_seed: Optional[int] = typer.Option(None, help="fix the data-order seed across runs"),
    dropout_seed: Optional[int] = typer.Option(None, help="fix the dropout seed across runs"),
    instruments: Optional[str] = typer.Option(None, help="per-step measurements: cheap, standard, full, or names "
                                                         "(grad_norm, update_norm, dist_init, weight_norm, "
                                                         "noise_scale)"),
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
    out: Path = typer.Option(Path(DEFAULT_OUT), help="folder for figures and tables"),
    force: bool = typer.Option(False, help="recompute runs already in the store"),
    wide: bool = typer.Option(False, "--wide", help="show every column of the table, whatever the terminal width"),
) -> None:
    """Train every batch size x lr x momentum x seed; store the runs; print a table; draw learning curves."""
    from batchlab.figure_helpers import FigureDrawer

    with FigureDrawer() as drawer:  # first: its helpers are forked before JAX is imported
        from batchlab.api import prepare, run_configs
        from batchlab.config import EarlyStopping, check_writable_dir, score_name
        from batchlab.store import summary_rows

        early = EarlyStopping(monitor, patience, min_delta, restore_best) if patience is not None else None
        configs, dataset, net = prepare(
            data, model, batch_size=batch_size, epochs=epochs, lr=lr, momentum=momentum, seeds=seeds,
            optimizer=optimizer, nesterov=nesterov, reduction=reduction, drop_last=drop_last, shuffle=shuffle,
            hidden=hidden, activation=activation, init=init, dropout=dropout, standardize=standardize,
            test_fraction=test_fraction, label=label, task=task, early_stopping=early, micro_batch=micro_batch,
            init_seed=init_seed, data_seed=data_seed, dropout_seed=dropout_seed, instruments=instruments)
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
def sweep(
    config: Optional[Path] = typer.Option(None, help="TOML file with the sweep's settings (options below override it)"),
    name: Optional[str] = typer.Option(None, help="sweep name in the store (default 'sweep')"),
    data: Optional[str] = typer.Option(None, help="built-in name or a .npz/.csv file (default digits)"),
    model: Optional[str] = typer.Option(None, help="mlp (default), logreg, cnn, or " + MODEL_HELP),
    hidden: Optional[str] = typer.Option(None, help="MLP hidden widths (default 50)"),
    batch_sizes: Optional[str] = typer.Option(None, "--batch-sizes", "-b", help="e.g. 1,2,4,...,1024,full or 1:1024,full"),
    lr: Optional[str] = typer.Option(None, help="learning rates tried at every B (default 0.01)"),
    momentum: Optional[float] = typer.Option(None, help="SGD momentum (default 0)"),
    seeds: Optional[int] = typer.Option(None, help="seeds per setting (default 3)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="shorthand for --budget epochs=N"),
    budget: Optional[str] = typer.Option(None, help="epochs=N, steps=N or samples=N (default epochs=30)"),
    target: Optional[str] = typer.Option(None, help="e.g. test_acc>=0.95 (default) or test_loss<=0.2"),
    lr_scaling: Optional[str] = typer.Option(None, help="one lr per B: linear or sqrt in B/base-batch"),
    base_lr: Optional[float] = typer.Option(None, help="lr at the base batch size, for --lr-scaling"),
    base_batch: Optional[int] = typer.Option(None, help="base batch size, for --lr-scaling"),
    warmup_epochs: Optional[float] = typer.Option(None, help="linear lr warmup over the first epochs"),
    executor: str = typer.Option("auto", "--executor", "--backend",
                                 help="auto (= local), local (threads of this process), processes or ray"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT (default: a local Ray)"),
    workers: Optional[int] = typer.Option(
        None, help="cohorts trained side by side: threads (local), worker processes, or Ray tasks "
                   "(default: one per core; Ray: at most 2)"),
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
) -> None:
    """Sweep batch size x learning rate x seeds; re-running the same sweep resumes it."""
    import dataclasses

    from batchlab.sweep.grid import SweepSpec, read_spec
    from batchlab.sweep.run import run_sweep

    if epochs is not None and budget is not None:
        raise BatchlabError("give --epochs or --budget, not both")
    overrides = dict(name=name, data=data, model=model, hidden=hidden, batch_sizes=batch_sizes, lr=lr,
                     momentum=momentum, seeds=seeds, budget=f"epochs={epochs}" if epochs is not None else budget,
                     target=target, lr_scaling=lr_scaling, base_lr=base_lr, base_batch=base_batch,
                     warmup_epochs=warmup_epochs)
    if config is not None:
        spec = read_spec(config, **overrides)
    else:
        spec = dataclasses.replace(SweepSpec(), **{k: v for k, v in overrides.items() if v is not None})
    expect_interrupts(db)
    bar, advance = progress_bar(1, f"sweep {spec.name}")
    with bar:
        result = run_sweep(spec, db, executor=executor, workers=workers, address=address, progress=advance,
                           on_start=lambda total: bar.update(bar.task_ids[0], total=max(total, 1)))
    typer.echo(f"sweep {result.name!r}: {len(result.run_ids)} runs, {result.trained} trained now, "
               f"{result.skipped} already stored in {db}. Next: batchlab analyze --sweep {result.name}")
