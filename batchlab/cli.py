"""The ``batchlab`` command: parse, call, print. Usage errors print one line and exit 2."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from batchlab.errors import BatchlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train under controlled batch size / epochs / learning rate and see what changes.")

DEFAULT_DB = "batchlab.db"
DEFAULT_OUT = "batchlab-out"


def _progress_bar(total: int, label: str):
    """A rich progress bar over run-epochs; returns (context manager, advance callback)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("run-epochs"),
                   TimeElapsedColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task(label, total=total)
    return bar, lambda k: bar.advance(task, k)


def _print_runs(frame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = [("run", "run_id"), ("B", "batch_size"), ("lr", "lr"), ("mom", "momentum"), ("seed", "seed"),
               ("status", "status"), ("train loss", "train_loss"), ("train acc", "train_acc"),
               ("test loss", "test_loss"), ("test acc", "test_acc"), ("best ep", "best_epoch"),
               ("steps", "steps"), ("samples", "samples_seen"), ("wall s", "train_seconds")]
    for name, _ in columns:
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for row in frame.to_dict("records"):
        cells = []
        for _, key in columns:
            value = row[key]
            if key == "run_id":
                cells.append(str(value)[:8])
            elif key == "status" and row.get("diverged_step") is not None and value == "diverged":
                cells.append(f"diverged@{int(row['diverged_step'])}")
            elif isinstance(value, float):
                cells.append(f"{value:.4g}" if key in ("lr", "momentum") else f"{value:,.3f}" if key != "train_seconds"
                             else f"{value:.2f}")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


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
    model: str = typer.Option("mlp", help="mlp, logreg or cnn"),
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
) -> None:
    """Train every batch size x lr x momentum x seed; store the runs; print a table; draw learning curves."""
    from batchlab.api import prepare, run_configs
    from batchlab.config import EarlyStopping
    from batchlab.plots import learning_curves, save_figure

    early = EarlyStopping(monitor, patience, min_delta, restore_best) if patience is not None else None
    configs, dataset, net = prepare(
        data, model, batch_size=batch_size, epochs=epochs, lr=lr, momentum=momentum, seeds=seeds,
        optimizer=optimizer, nesterov=nesterov, reduction=reduction, drop_last=drop_last, shuffle=shuffle,
        hidden=hidden, activation=activation, init=init, dropout=dropout, standardize=standardize,
        test_fraction=test_fraction, label=label, early_stopping=early, micro_batch=micro_batch,
        init_seed=init_seed, data_seed=data_seed, dropout_seed=dropout_seed, instruments=instruments)
    total = sum(c.epochs for c in configs)
    bar, advance = _progress_bar(total, f"training {len(configs)} run(s)")
    start = time.perf_counter()
    with bar:
        result = run_configs(configs, dataset, net, db=db, force=force, progress=advance)
    _print_runs(result.summary, f"{dataset.name}: {len(configs)} run(s), N={dataset.n_train}, "
                                f"{time.perf_counter() - start:.1f} s")
    if result.skipped:
        typer.echo(f"{len(result.skipped)} run(s) were already in {db} and were not recomputed (--force to redo).")
    files = []
    for metric in ("acc", "loss"):
        files += save_figure(learning_curves(result.history, metric), out / f"learning_curves_{metric}")
    typer.echo(f"runs stored in {db}; figures: {', '.join(str(f) for f in files if f.suffix == '.png')}")


@app.command()
def runs(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """List stored runs: id, settings, status, final metrics."""
    from batchlab.store import Store, summary_frame

    with Store(db, create=False) as store:
        results = store.load(steps=False)
    if not results:
        typer.echo(f"{db} holds no runs")
        return
    _print_runs(summary_frame(results), f"{len(results)} run(s) in {db}")


@app.command()
def export(fmt: str = typer.Option("csv", "--format", help="csv or parquet"),
           out: Path = typer.Option(..., help="folder to write runs, epochs and steps tables into"),
           db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """Write the store as tables: runs (settings, status, config, version), epochs, steps."""
    from batchlab.store.export import export_store

    if fmt not in ("csv", "parquet"):
        raise BatchlabError(f"unknown export format {fmt!r}: choose csv or parquet")
    for path in export_store(db, out, fmt):
        typer.echo(str(path))


@app.command()
def noise(
    data: str = typer.Option("digits", help="built-in name or a .npz/.csv file"),
    model: str = typer.Option("mlp", help="mlp, logreg or cnn"),
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
    sharpness: bool = typer.Option(True, help="also measure Hessian lambda_max and trace"),
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
                                pool=pool, seed=seed, hidden=hidden, sharpness=sharpness, db=db)
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
    model: Optional[str] = typer.Option(None, help="mlp, logreg or cnn (default mlp)"),
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
                                 help="auto (worker processes when it pays), local, processes or ray"),
    address: Optional[str] = typer.Option(None, help="Ray cluster address HOST:PORT (default: a local Ray)"),
    workers: Optional[int] = typer.Option(None, help="worker processes (default: one per core, at most 2)"),
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
        table.add_row(str(row["batch_size"]), f"{row['lr']:g}", f"{row['reached']:.0%}", cell("steps"),
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


def _run_one_study(name: str, *, quick: bool, overrides: dict, db: Path, out: Optional[Path], force: bool) -> None:
    from batchlab.studies import get_study
    from batchlab.studies.runner import run_study

    st = get_study(name)
    bar, advance = _progress_bar(1, f"study {name}" + (" (quick)" if quick else ""))
    with bar:
        result = run_study(st, quick=quick, overrides=overrides, db=db, out=out, force=force, progress=advance,
                           on_start=lambda total: bar.update(bar.task_ids[0], total=max(total, 1)))
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
    from batchlab.studies import available

    if name == "list":
        _list_studies()
        return
    overrides = _parse_sets(settings)
    overrides.update({k: v for k, v in (("seeds", seeds), ("epochs", epochs)) if v is not None})
    if name == "all" and overrides:
        raise BatchlabError("settings (--set, --seeds, --epochs) apply to one study; 'all' runs each at its own")
    names = available() if name == "all" else [name]
    for each in names:
        where = (out / each if name == "all" else out) if out is not None else None
        _run_one_study(each, quick=quick, overrides=overrides if name != "all" else {}, db=db, out=where,
                       force=force)


@app.command()
def tour(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
         out: Path = typer.Option(Path("results"), help="folder for each study's figures and findings"),
         report_dir: Path = typer.Option(Path("report"), "--report", help="folder for the HTML report")) -> None:
    """Every study at --quick size, then the report: the whole of batchlab in a few minutes."""
    from batchlab.report import build_report
    from batchlab.studies import available, get_study
    from batchlab.studies.runner import run_study

    names = available()
    bar, advance = _progress_bar(1, "tour")
    task = bar.task_ids[0]
    summary = []
    with bar:
        for i, name in enumerate(names, 1):
            bar.update(task, description=f"study {i}/{len(names)}: {name}")
            done = bar.tasks[0].completed
            result = run_study(get_study(name), quick=True, db=db, out=out / name, progress=advance,
                               on_start=lambda total: bar.update(task, total=done + max(total, 1)))
            verdicts = [f.verdict for f in result.findings]
            summary.append(f"{name:<15} {result.seconds:5.1f} s  " + ", ".join(
                f"{verdicts.count(v)} {v}" for v in ("agrees", "disagrees", "inconclusive") if v in verdicts))
        bar.update(task, description="report")
        path = build_report(db, report_dir)
    typer.echo("\n".join(["quick-size studies (findings.md in each folder of " + str(out) + "):", *summary]))
    typer.echo(f"report: {path}")


def main() -> None:
    try:
        app()
    except BatchlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: runs finished before the interrupt are stored", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
