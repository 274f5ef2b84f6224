"""The ``batchlab`` command: parse, call, print. Usage errors print one line and exit 2."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from batchlab.errors import BatchlabError
from batchlab.runs_table import per_run_seconds, print_runs

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train under controlled batch size / epochs / learning rate and see what changes.")

DEFAULT_DB = "batchlab.db"
DEFAULT_OUT = "batchlab-out"
MODEL_HELP = ("your own as file.py:function or package.module:function returning a Flax, Equinox, Keras 3 or "
              "PyTorch model or a batchlab.Model")


def _progress_bar(total: int, label: str):
    """A rich progress bar over run-epochs; returns (context manager, advance callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("run-epochs"),
                   TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task(label, total=total)
    return bar, lambda k: bar.advance(task, k)


# Metric columns of the runs table, and the order in which columns go when the terminal is
# narrow: first the counts (samples, steps), then best epoch, the losses, the wall time, the
# train accuracy, then the settings that vary (last listed first). Run id, seed, status and
# test accuracy always stay.
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
        _expect_interrupts(db)
        for note in getattr(dataset, "notes", ()) or ():
            typer.echo(f"note: {note}", err=True)
        total = sum(c.epochs for c in configs)
        bar, advance = _progress_bar(total, f"training {len(configs)} run(s)")
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


_FILTERS = "--data, --model, --batch-size, --sweep, --status"


def _select(store, data: Optional[str], model: Optional[str], batch_size: Optional[str], sweep_name: Optional[str],
            status: Optional[str], run_ids: Optional[list[str]] = None):
    """The stored runs matching every filter given (run ids may be 8-character prefixes), as
    (results, summary frame with per-run seconds)."""
    from batchlab.config import parse_batch_sizes
    from batchlab.store import summary_frame

    results = store.load(steps=False)
    frame = summary_frame(results)
    if frame.empty:
        return [], frame
    frame = frame.assign(seconds_per_run=per_run_seconds(frame.to_dict("records")))  # all runs, before filtering
    keep = frame.run_id == frame.run_id
    if data is not None:
        keep &= frame["data"] == data
    if model is not None:
        keep &= frame["model"] == model
    if batch_size is not None:
        sizes = parse_batch_sizes(batch_size)
        if "full" in sizes:
            raise BatchlabError("filter by an integer batch size (the N of 'full' depends on the data)")
        keep &= frame.batch_size.isin(sizes)
    if sweep_name is not None:
        if sweep_name not in store.sweeps():
            raise BatchlabError(f"no sweep named {sweep_name!r} in {store.path}")
        keep &= frame.run_id.isin(store.sweep_run_ids(sweep_name))
    if status is not None:
        keep &= frame.status == status
    if run_ids:
        keep &= frame.run_id.map(lambda r: any(r.startswith(p) for p in run_ids))
    chosen = set(frame.run_id[keep])
    return [r for r in results if r.run_id in chosen], frame[keep]


@app.command()
def runs(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
         data: Optional[str] = typer.Option(None, help="only runs on this data"),
         model: Optional[str] = typer.Option(None, help="only runs of this model"),
         batch_size: Optional[str] = typer.Option(None, "--batch-size", "-b", help="only these batch sizes"),
         sweep_name: Optional[str] = typer.Option(None, "--sweep", help="only the runs of this sweep"),
         status: Optional[str] = typer.Option(None, help="only runs with this status (finished, diverged, ...)"),
         wide: bool = typer.Option(False, "--wide", help="show every column, whatever the terminal width")) -> None:
    """List stored runs: id, the settings that differ, status, final metrics."""
    from batchlab.store import Store

    with Store(db, create=False) as store:
        total = len(store.run_ids())
        _, frame = _select(store, data, model, batch_size, sweep_name, status)
    if frame.empty:
        typer.echo(f"{db} holds no runs" if not total else f"no run of the {total} in {db} matches")
        return
    shown = f"{len(frame)} of {total}" if len(frame) != total else f"{total}"
    print_runs(frame.to_dict("records"), f"{shown} run(s) in {db}", wide)


@app.command()
def delete(run_ids: Optional[list[str]] = typer.Argument(None, help="run ids (or their first 8 characters)"),
           db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
           data: Optional[str] = typer.Option(None, help="runs on this data"),
           model: Optional[str] = typer.Option(None, help="runs of this model"),
           batch_size: Optional[str] = typer.Option(None, "--batch-size", "-b", help="runs of these batch sizes"),
           sweep_name: Optional[str] = typer.Option(None, "--sweep", help="the runs of this sweep"),
           status: Optional[str] = typer.Option(None, help="runs with this status"),
           yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking")) -> None:
    """Delete chosen runs from the store in one transaction, after showing them and asking."""
    from batchlab.store import Store

    if not run_ids and all(v is None for v in (data, model, batch_size, sweep_name, status)):
        raise BatchlabError(f"say which runs to delete: run ids or a filter ({_FILTERS})")
    with Store(db, create=False) as store:
        _, frame = _select(store, data, model, batch_size, sweep_name, status, run_ids)
        if frame.empty:
            raise BatchlabError(f"no run in {db} matches; nothing deleted")
        print_runs(frame.to_dict("records"), f"{len(frame)} run(s) to delete from {db}")
        if not yes:
            if not sys.stdin.isatty():
                raise BatchlabError("no terminal to confirm on: add --yes to delete these runs")
            if not typer.confirm(f"delete these {len(frame)} run(s)?", default=False):
                typer.echo("nothing deleted")
                return
        store.check_writable()
        deleted = store.delete(list(frame.run_id))
    typer.echo(f"deleted {deleted} run(s) from {db}")


@app.command()
def check(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """SQLite's integrity check of a store, and which runs are intact (exit 0 if sound, 1 if damaged)."""
    from batchlab.store import check_integrity

    if not db.is_file():
        raise BatchlabError(f"no batchlab store at {db}")
    report = check_integrity(db)  # read-only: works on a file that Store refuses to open
    for message in report.messages:
        typer.echo(f"sqlite integrity_check: {message}")
    typer.echo(report.readable())
    if report.damaged:
        typer.echo(f"damaged run(s): {', '.join(r[:8] for r in report.damaged)}")
    if report.intact and not report.ok:
        typer.echo(f"intact run(s): {', '.join(r[:8] for r in report.intact)}")
    typer.echo(f"{db}: " + ("ok" if report.ok else "damaged; batchlab never writes to it (export what is "
                                                    "readable, or re-run the damaged runs into a new --db)"))
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(fmt: str = typer.Option("csv", "--format", help="csv or parquet"),
           out: Path = typer.Option(..., help="folder to write runs, epochs and steps tables into"),
           db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """Write the store as tables: runs (settings, status, config, version), epochs, steps."""
    from batchlab.store.export import export_store

    from batchlab.config import check_writable_dir

    if fmt not in ("csv", "parquet"):
        raise BatchlabError(f"unknown export format {fmt!r}: choose csv or parquet")
    from batchlab.store import Store

    Store(db, create=False).close()  # a missing or foreign store is named before any folder is made
    check_writable_dir(out, "--out folder")
    for path in export_store(db, out, fmt):
        typer.echo(str(path))


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

    from batchlab.instruments.base import parse_epoch_schedule
    from batchlab.studies import gradient_noise

    checkpoints = parse_epoch_schedule(at_epochs, epochs)
    output = gradient_noise.run(out, data=data, model=model, batch_size=batch_size, lr=lr, momentum=momentum,
                                at_epochs=checkpoints, epochs=epochs, batch_sizes=batch_sizes, trials=trials,
                                reductions=tuple(r.strip() for r in reduction.split(",")), sampling=sampling,
                                pool=pool, seed=seed, hidden=hidden, sharpness=sharpness, db=db, task=task,
                                label=label)
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
    _expect_interrupts(db)
    bar, advance = _progress_bar(1, f"sweep {spec.name}")
    with bar:
        result = run_sweep(spec, db, executor=executor, workers=workers, address=address, progress=advance,
                           on_start=lambda total: bar.update(bar.task_ids[0], total=max(total, 1)))
    typer.echo(f"sweep {result.name!r}: {len(result.run_ids)} runs, {result.trained} trained now, "
               f"{result.skipped} already stored in {db}. Next: batchlab analyze --sweep {result.name}")


@app.command()
def report(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
           out: Path = typer.Option(Path("report"), help="folder for the HTML page"),
           study: Optional[str] = typer.Option(None, help="one study's page only, e.g. gradient-norm")) -> None:
    """One self-contained HTML page (works offline) of every study, sweep and group of runs in the store."""
    import warnings

    from batchlab.report import build_report

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = build_report(db, out, study)
    for warning in caught:
        typer.echo(f"warning: {warning.message}", err=True)
    typer.echo(str(path))


@app.command()
def analyze(sweep_name: Optional[str] = typer.Option(None, "--sweep", help="sweep name (default: the last one)"),
            target: Optional[str] = typer.Option(None, help="override the sweep's target, e.g. test_acc>=0.9"),
            out: Path = typer.Option(Path("results/analysis"), help="folder for tables and figures"),
            db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """Best lr per batch size, steps/samples/time to target, and the critical batch size fit."""
    from rich.console import Console
    from rich.table import Table

    from batchlab.studies.scaling import analyze as analyze_sweep

    result = analyze_sweep(db, out, sweep_name, target)
    table = Table(title=f"sweep {result.name!r}: to reach {result.target} (best lr per B; mean ± std over seeds)")
    for column in ("B", "best lr", "seeds reaching", "steps", "samples", "seconds", "test acc", "gap", "regime"):
        table.add_column(column, justify="right")
    for row in result.best.to_dict("records"):
        def cell(key, fmt="{:,.0f}"):
            value, std = row[key], row.get(f"{key}_std")
            if value != value:  # NaN
                return "-"
            return fmt.format(value) + ("" if std is None or std != std else " ± " + fmt.format(std))
        steps = cell("steps") if row["reached"] == 1.0 or row["steps"] == row["steps"] else "not reached"
        table.add_row(str(row["batch_size"]), f"{row['lr']:g}", f"{row['reached']:.0%}", steps,
                      cell("samples"), cell("seconds", "{:.2f}"), cell("test_acc", "{:.3f}"),
                      cell("gap_acc", "{:.3f}"), row.get("regime", "-"))
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if result.fit is not None:
        f = result.fit
        typer.echo(f"critical batch size fit S(B) = S_min (1 + B_crit/B): S_min = {f.s_min:,.0f} ± {f.s_min_se:,.0f} "
                   f"steps, B_crit = {f.b_crit:,.1f} ± {f.b_crit_se:,.1f}, E_min = {f.e_min:,.0f} samples")
    else:
        typer.echo("fewer than 3 batch sizes reached the target with every seed: no critical-batch fit")
    if result.missing:
        typer.echo(f"{result.missing} run(s) of this sweep are not stored yet (re-run the sweep to finish them)")
    typer.echo("wrote: " + ", ".join(str(p) for p in result.files if p.suffix != ".svg"))


def _parse_sets(items: list[str]) -> dict[str, str]:
    """``["seeds=5", "data=mnist1d"]`` -> {"seeds": "5", "data": "mnist1d"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BatchlabError(f"--set takes key=value, got {item!r}")
        out[key.strip()] = value
    return out


def _list_studies() -> None:
    from rich.console import Console
    from rich.table import Table

    from batchlab.studies import available, get_study
    from batchlab.studies.runner import count_runs

    table = Table(title="batchlab studies (batchlab study NAME [--quick] [--set key=value])")
    for column in ("study", "question", "source", "runs (faithful)", "est. time"):
        table.add_column(column)
    for name in available():
        st = get_study(name)
        table.add_row(name, st.question, st.source.split(",")[0].split(" (")[0],
                      f"{count_runs(st, st.settings())}", f"{st.minutes[0]:g} min (quick {st.minutes[1] * 60:.0f} s)")
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _run_one_study(name: str, *, quick: bool, overrides: dict, db: Path, out: Optional[Path], force: bool,
                   drawer) -> None:
    from batchlab.studies import get_study
    from batchlab.studies.runner import run_study

    st = get_study(name)
    bar, advance = _progress_bar(1, f"study {name}" + (" (quick)" if quick else ""))
    with bar:
        result = run_study(st, quick=quick, overrides=overrides, db=db, out=out, force=force, progress=advance,
                           on_start=lambda total: bar.update(bar.task_ids[0], total=max(total, 1)), drawer=drawer)
    typer.echo(f"# {name}: {st.question}  ({result.seconds:.1f} s, {len(result.run_ids)} runs)")
    for finding in result.findings:
        typer.echo(finding.markdown())
    typer.echo("wrote: " + ", ".join(str(f) for f in result.files if f.suffix in (".png", ".md")) + "\n")


@app.command()
def study(name: str = typer.Argument(..., help="a study name, 'list' to see them all, or 'all'"),
          quick: bool = typer.Option(False, "--quick", help="the same study at reduced size (tests, demos)"),
          settings: list[str] = typer.Option([], "--set", help="override a setting: key=value (repeatable; "
                                                               "lists as a,b,c); see findings.md for the keys"),
          seeds: Optional[int] = typer.Option(None, help="shorthand for --set seeds=N"),
          epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="shorthand for --set epochs=N"),
          out: Optional[Path] = typer.Option(None, help="output folder (default results/NAME; with 'all', "
                                                        "one subfolder per study)"),
          db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
          force: bool = typer.Option(False, help="recompute runs already in the store")) -> None:
    """Reproduce a published experiment: train what is missing, then figures, tables and findings.md."""
    from batchlab.figure_helpers import FigureDrawer
    from batchlab.studies import available

    if name == "list":
        _list_studies()
        return
    overrides = _parse_sets(settings)
    overrides.update({k: v for k, v in (("seeds", seeds), ("epochs", epochs)) if v is not None})
    if name == "all" and overrides:
        raise BatchlabError("settings (--set, --seeds, --epochs) apply to one study; 'all' runs each at its own")
    names = available() if name == "all" else [name]
    _expect_interrupts(db)
    with FigureDrawer() as drawer:  # before JAX is imported: its helpers are forked now
        for each in names:
            where = (out / each if name == "all" else out) if out is not None else None
            _run_one_study(each, quick=quick, overrides=overrides if name != "all" else {}, db=db, out=where,
                           force=force, drawer=drawer)


@app.command()
def tour(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
         out: Path = typer.Option(Path("results"), help="folder for each study's figures and findings"),
         report_dir: Path = typer.Option(Path("report"), "--report", help="folder for the HTML report")) -> None:
    """Every study at --quick size, then the report: the whole of batchlab in a few minutes."""
    from batchlab.figure_helpers import FigureDrawer
    from batchlab.report import build_report
    from batchlab.studies import available, get_study
    from batchlab.studies.runner import run_study

    names = available()
    bar, advance = _progress_bar(1, "tour")
    task = bar.task_ids[0]
    summary = []
    with FigureDrawer() as drawer, bar:  # the helpers are forked first: before JAX and any thread
        for i, name in enumerate(names, 1):
            bar.update(task, description=f"study {i}/{len(names)}: {name}")
            done = bar.tasks[0].completed
            result = run_study(get_study(name), quick=True, db=db, out=out / name, progress=advance,
                               on_start=lambda total: bar.update(task, total=done + max(total, 1)), drawer=drawer)
            verdicts = [f.verdict for f in result.findings]
            summary.append(f"{name:<15} {result.seconds:5.1f} s  " + ", ".join(
                f"{verdicts.count(v)} {v}" for v in ("agrees", "disagrees", "inconclusive") if v in verdicts))
        bar.update(task, description="report")
        path = build_report(db, report_dir)
    typer.echo("\n".join(["quick-size studies (findings.md in each folder of " + str(out) + "):", *summary]))
    typer.echo(f"report: {path}")


# Set by the commands that train (train, sweep, study): the store and how many runs it held
# before, so that Ctrl-C can say what was saved and how to resume.
_RESUME: dict = {}


def _expect_interrupts(db: Path) -> None:
    _RESUME.update(db=db, before=_stored_runs(db))


def _stored_runs(db: Path) -> int:
    """Runs in the store now (0 when there is none yet), read without writing anything."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def _interrupted() -> str:
    """What Ctrl-C leaves behind: the runs stored, and the command that resumes the work."""
    import shlex

    command = "batchlab " + shlex.join(sys.argv[1:])
    if "db" not in _RESUME:
        return "interrupted"
    db, before = _RESUME["db"], _RESUME["before"]
    now = _stored_runs(db)
    return (f"interrupted: {now - before} run(s) finished and were stored in {db} by this command "
            f"({now} in all); resume with: {command}")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print batchlab's version and exit",
                                       is_eager=True),
          profile: bool = typer.Option(False, "--profile", help="print where the command's wall time went "
                                                                "(imports, tracing, compilation, training, ...)")
          ) -> None:
    """Train under controlled batch size / epochs / learning rate and see what changes."""
    if profile:
        from batchlab import profiling

        profiling.enable()
    if version:
        from batchlab import __version__

        typer.echo(f"batchlab {__version__}")
        raise typer.Exit()


def main() -> None:
    """The ``batchlab`` entry point: bad input and damaged files are one line on stderr (exit 2),
    Ctrl-C says what was saved and how to resume (exit 130)."""
    import sqlite3

    try:
        app()
    except BatchlabError as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        _fail(f"the store could not be read or written ({exc}); run batchlab check --db FILE to see what is intact")
    except OSError as exc:
        _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if getattr(exc, "filename", None) else ""))
    except KeyboardInterrupt:
        print(_interrupted(), file=sys.stderr)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into exit status 130 before it reaches us
            print(_interrupted(), file=sys.stderr)
        raise
    finally:
        _print_profile()


def _print_profile() -> None:
    from batchlab import profiling

    if profiling.enabled():
        print(profiling.table(), file=sys.stderr)


def _fail(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    sys.exit(2)


def console_main() -> None:
    """The installed ``batchlab`` command: :func:`main`, then an exit without the interpreter's
    teardown, which spent 0.35-0.45 s after every command here freeing JAX's compiled programs
    and every module. Everything that must outlive the command is done by then: the store is
    written one transaction at a time and closed, figures and tables are written; output is
    flushed and the exit handlers still run (a local Ray shuts down). Tests call :func:`main`."""
    import atexit
    import os

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"): printed, status 1, as Python does
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # noqa: SLF001  (what interpreter shutdown would run; os._exit skips it)
    os._exit(code or 0)


if __name__ == "__main__":
    console_main()
