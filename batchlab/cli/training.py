"""Commands that train: ``plan`` (what N, B and epochs make), ``train``, ``sweep``."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import typer

from batchlab.cli import DEFAULT_DB, DEFAULT_OUT, app, expect_interrupts, progress_bar, say
from batchlab.cli.options import settings_options
from batchlab.runs_table import print_runs
from batchlab.settings import SWEEP, SWEEP_DEFAULTS, TRAINING


@app.command()
def plan(n: str = typer.Option(..., "--n", help="training samples N"),
         batch_size: str = typer.Option(..., "--batch-size", "-b", help="B, 'full', or a list '1,32,full'"),
         epochs: str = typer.Option(..., "--epochs", "-e", help="passes over the training set"),
         drop_last: bool = typer.Option(False, "--drop-last", help="drop the last partial batch (MATLAB)")) -> None:
    """How N, B and epochs turn into updates and samples seen."""
    from batchlab.budget import plan as make_plan
    from batchlab.parsing import integer_at_least, parse_batch_sizes, resolve_batch_size

    rows, passes = integer_at_least("N", 1)(n), integer_at_least("epochs", 1)(epochs)
    for b in parse_batch_sizes(batch_size):
        p = make_plan(rows, resolve_batch_size(b, rows), passes, drop_last)
        prefix = f"B={p.batch_size}: " if "," in batch_size or ":" in batch_size else ""
        say(prefix + p.describe())


@app.command()
@settings_options(TRAINING)
def train(
    given: dict,
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
    out: Path = typer.Option(Path(DEFAULT_OUT), help="folder for figures and tables"),
    force: bool = typer.Option(False, help="recompute runs already in the store"),
    wide: bool = typer.Option(False, "--wide", help="show every column of the table, whatever the terminal width"),
) -> None:
    """Train every combination of the settings' lists; store the runs; print a table; draw curves.

    The lists (grid axes): batch size, optimizer, lr, momentum, weight decay and seeds."""
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
            say(f"note: {note}", err=True)
        total = sum(c.epochs for c in configs)
        bar, advance = progress_bar(total, f"training {len(configs)} run(s)")
        start = time.perf_counter()
        with bar:
            result = run_configs(configs, dataset, net, db=db, force=force, progress=advance)
        print_runs(summary_rows(result.runs), f"{dataset.name}: {len(configs)} run(s), N={dataset.n_train}, "
                                              f"{time.perf_counter() - start:.1f} s", wide)
        if result.skipped:
            say(f"{len(result.skipped)} run(s) were already in {db} and were not recomputed (--force to redo).")
        # The figures need the per-epoch records only (not the parameters); pandas is imported
        # by the helpers that draw them, not here.
        records = [dataclasses.replace(run, params=None, steps={}, checkpoints={}) for run in result.runs]
        for metric in (score_name(dataset.task), "loss"):
            drawer.draw("batchlab.cli.figures:runs_learning_curves", records, metric,
                        path=out / f"learning_curves_{metric}")
        pngs = [str(f) for figure in drawer.files() for f in figure if f.suffix == ".png"]
        say(f"runs stored in {db}; figures: {', '.join(pngs)}")


@app.command()
@settings_options(SWEEP + TRAINING, defaults=SWEEP_DEFAULTS, helps={"epochs": "shorthand for --budget epochs=N"},
                  aliases=True)
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
    """Sweep batch size x learning rate x seeds (and any other axis); re-running it resumes it."""
    from batchlab.sweep.run import prepare_sweep, run_sweep
    from batchlab.sweep.spec import SweepSpec, read_spec

    spec = read_spec(config, **given) if config is not None else SweepSpec(**given)
    prepared = prepare_sweep(spec)
    expect_interrupts(db)
    bar, advance = progress_bar(sum(c.epochs for c in prepared[0]), f"sweep {spec.name}")
    with bar:
        result = run_sweep(spec, db, executor=executor, workers=workers, address=address, progress=advance,
                           prepared=prepared)
    say(f"sweep {result.name!r}: {len(result.run_ids)} runs, {result.trained} trained now, "
               f"{result.skipped} already stored in {db}. Next: batchlab analyze --sweep {result.name}")
