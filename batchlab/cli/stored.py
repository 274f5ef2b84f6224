"""Commands on what a store holds: ``runs``, ``delete``, ``check``, ``export``, ``report``, ``analyze``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from batchlab.cli import DEFAULT_DB, app, console, damage_of, say, warn_if_damaged
from batchlab.errors import BatchlabError
from batchlab.runs_table import per_run_seconds, print_runs

if TYPE_CHECKING:
    from batchlab.analysis.sweep import SweepAnalysis
    from batchlab.figure_helpers import FigureDrawer


_FILTERS = "--data, --model, --batch-size, --sweep, --status"
ID_PREFIX = 8  # the fewest characters of a run id that name it (batchlab runs shows this many)


def _select(store, data: Optional[str], model: Optional[str], batch_size: Optional[str], sweep_name: Optional[str],
            status: Optional[str], run_ids: Optional[list[str]] = None):
    """The stored runs matching every filter given (run ids may be 8-character prefixes), as
    (results, summary frame with per-run seconds)."""
    from batchlab.parsing import parse_batch_sizes
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
        _, frame = _select(store, data, model, batch_size, sweep_name, status)
        total = len(store.run_ids()) - len(store.newer)  # runs a newer batchlab wrote: named in a note
        damage = store.damage_note()
    if frame.empty:
        say(f"no run of the {total} in {db} matches" if total else
                   f"{db} holds no run{' this batchlab can read' if store.newer else 's'}")
    else:
        shown = f"{len(frame)} of {total}" if len(frame) != total else f"{total}"
        print_runs(frame.to_dict("records"), f"{shown} run(s) in {db}", wide)
    warn_if_damaged(damage)


@app.command()
def delete(run_ids: Optional[list[str]] = typer.Argument(None, help="run ids (or their first 8 characters, or more)"),
           db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
           data: Optional[str] = typer.Option(None, help="runs on this data"),
           model: Optional[str] = typer.Option(None, help="runs of this model"),
           batch_size: Optional[str] = typer.Option(None, "--batch-size", "-b", help="runs of these batch sizes"),
           sweep_name: Optional[str] = typer.Option(None, "--sweep", help="the runs of this sweep"),
           status: Optional[str] = typer.Option(None, help="runs with this status"),
           yes: bool = typer.Option(False, "--yes", "-y", help="delete without asking")) -> None:
    """Delete chosen runs from the store in one transaction, after showing them and asking.

    A run id may be given by its first 8 characters (or more) when no other run's id starts with
    them; filters narrow what the ids choose, and ``--yes`` only skips the question."""
    from batchlab.store import Store

    if not run_ids and all(v is None for v in (data, model, batch_size, sweep_name, status)):
        raise BatchlabError(f"say which runs to delete: run ids or a filter ({_FILTERS})")
    for given in run_ids or ():
        if len(given.strip()) < ID_PREFIX:
            empty = " (an empty id starts every id)" if not given.strip() else ""
            raise BatchlabError(f"run id {given!r} is too short{empty}: give at least its first {ID_PREFIX} "
                                "characters (as batchlab runs shows them); nothing deleted")
    with Store(db, create=False) as store:
        full_ids = _full_run_ids(run_ids, store.run_ids(), db) if run_ids else None
        _, frame = _select(store, data, model, batch_size, sweep_name, status, full_ids)
        if frame.empty:
            raise BatchlabError(f"no run in {db} matches; nothing deleted")
        print_runs(frame.to_dict("records"), f"{len(frame)} run(s) to delete from {db}")
        if not yes:
            if not sys.stdin.isatty():
                raise BatchlabError("no terminal to confirm on: add --yes to delete these runs")
            if not typer.confirm(f"delete these {len(frame)} run(s)?", default=False):
                say("nothing deleted")
                return
        store.check_writable()
        deleted = store.delete(list(frame.run_id))
    say(f"deleted {deleted} run(s) from {db}")


def _full_run_ids(given: list[str], stored: set[str], db: Path) -> list[str]:
    """The stored run each of ``given`` names: its full id, or a prefix that starts no other id."""
    full = []
    for prefix in given:
        matches = [prefix] if prefix in stored else sorted(r for r in stored if r.startswith(prefix))
        if not matches:
            raise BatchlabError(f"no run in {db} has an id starting with {prefix!r}; nothing deleted")
        if len(matches) > 1:
            raise BatchlabError(f"run id {prefix!r} starts the ids of {len(matches)} runs in {db} "
                                f"({', '.join(matches[:3])}{', ...' if len(matches) > 3 else ''}): give more of the id "
                                "of the one to delete; nothing deleted")
        full.append(matches[0])
    return full


@app.command()
def check(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """SQLite's integrity check of a store, and which runs are intact.

    Exit 0 if every other command can use it, 1 if damaged. Runs a newer batchlab wrote are
    listed, not damage; a journal an interrupted write left is checked as the next command will
    find it, rolled back."""
    from batchlab.store import check_integrity

    if not db.is_file():
        raise BatchlabError(f"no batchlab store at {db}")
    report = check_integrity(db)  # read-only: works on a file that Store refuses to open
    for line in report.notes:
        say(f"note: {line}")
    for message in report.messages:
        say(f"sqlite integrity_check: {message}")
    say(report.readable())
    if report.newer:
        say(f"newer run(s), skipped by this batchlab: {report.newer_line()}")
    if report.damaged:
        say(f"damaged run(s): {', '.join(r[:8] for r in report.damaged)}")
    if report.intact and not report.sound:
        say(f"intact run(s): {', '.join(r[:8] for r in report.intact)}")
    say(f"{db}: " + ("ok" if report.sound else "damaged; batchlab never writes to it (export what is "
                                                       "readable, or re-run the damaged runs into a new --db)"))
    if not report.sound:
        raise typer.Exit(1)


@app.command()
def export(fmt: str = typer.Option("csv", "--format", help="csv, parquet, tensorboard or mlflow"),
           out: Path = typer.Option(..., help="folder for the tables, event files or MLflow file store"),
           db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)")) -> None:
    """Write the store as tables (runs, epochs, steps), TensorBoard event files or an MLflow store."""
    from batchlab.store.export import FORMATS, export_store

    from batchlab.paths import check_writable_dir

    if fmt not in FORMATS:
        raise BatchlabError(f"unknown export format {fmt!r}: choose {', '.join(FORMATS)}")
    damage = damage_of(db)
    check_writable_dir(out, "--out folder")
    for path in export_store(db, out, fmt):
        say(str(path))
    warn_if_damaged(damage)


@app.command()
def report(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
           out: Path = typer.Option(Path("report"), help="folder for the HTML page"),
           study: Optional[str] = typer.Option(None, help="one study's page only, e.g. gradient-norm")) -> None:
    """One self-contained HTML page (works offline) of every study, sweep and group of runs in the store."""
    import warnings

    from batchlab.figure_helpers import FigureDrawer

    with FigureDrawer() as drawer:  # first: its helpers build the studies' sections side by side
        from batchlab.report import build_report

        damage = damage_of(db)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = build_report(db, out, study, drawer)
    for warning in caught:
        say(f"warning: {warning.message}", err=True)
    say(str(path))
    warn_if_damaged(damage)


@app.command()
def analyze(sweep_name: Optional[str] = typer.Option(None, "--sweep", help="sweep name (default: the last one)"),
            target: Optional[str] = typer.Option(None, help="override the sweep's target, e.g. test_acc>=0.9"),
            out: Path = typer.Option(Path("results/analysis"), help="folder for tables and figures"),
            db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
            wide: bool = typer.Option(False, "--wide", help="tables as wide as they need")) -> None:
    """Best lr per batch size, steps/samples/time to target, and the critical batch size fit."""
    from batchlab.figure_helpers import FigureDrawer

    with FigureDrawer() as drawer:  # first: its helpers import matplotlib while this process analyses
        from batchlab.analysis.selection import RULE
        from batchlab.analysis.sweep import analyse_sweep

        damage = damage_of(db)
        result = analyse_sweep(db, sweep_name, target)
        files = _write_sweep_analysis(result, out, drawer)
    console(wide).print(_best_table(result, wide))
    if not wide:
        say(f"not shown to fit the terminal: {', '.join(NARROW_DROPS)} (--wide shows them; all in best_per_batch.csv)")
    say(f"rule: {RULE}")
    if result.edge:
        say(f"warning: {result.edge}")
    if result.fit is not None:
        f = result.fit
        say(f"critical batch size fit S(B) = S_min (1 + B_crit/B): S_min = {f.s_min:,.0f} ± {f.s_min_se:,.0f} "
                   f"steps, B_crit = {f.b_crit:,.1f} ± {f.b_crit_se:,.1f}, E_min = {f.e_min:,.0f} samples")
    else:
        say("fewer than 3 batch sizes have a best lr (every seed usable and ending at the target): "
            "no critical-batch fit")
    if result.missing:
        say(f"{result.missing} run(s) of this sweep are not stored yet (re-run the sweep to finish them)")
    say("wrote: " + ", ".join(str(p) for p in files if p.suffix != ".svg"))
    warn_if_damaged(damage)


def _best_table(result, wide: bool):
    """The best lr per batch size and what it took to reach the target (NARROW_DROPS left out
    unless ``wide``)."""
    from rich.table import Table

    table = Table(title=f"sweep {result.name!r}: to reach {result.target} (best lr per B; mean ± std over seeds)")
    columns = ("B", "best lr", "seeds reaching", "steps", "samples", "seconds", "test acc", "gap", "regime")
    shown = columns if wide else tuple(c for c in columns if c not in NARROW_DROPS)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=column == "steps")
    for row in result.best.to_dict("records"):
        def cell(key, fmt="{:,.0f}"):
            value, std = row[key], row.get(f"{key}_std")
            if value != value:  # NaN
                return "-"
            return fmt.format(value) + ("" if std is None or std != std else " ± " + fmt.format(std))
        steps = cell("steps") if row["steps"] == row["steps"] else "not reached (by a usable lr)"
        lr = f"{row['lr']:g}" if row["lr"] == row["lr"] else "none"
        table.add_row(str(row["batch_size"]), lr, f"{row['reached']:.0%}", steps,
                      cell("samples"), cell("seconds", "{:.2f}"), cell("test_acc", "{:.3f}"),
                      cell("gap_acc", "{:.3f}"), row.get("regime", "-"))
    for column in reversed([c for c in columns if c not in shown]):
        table.columns.pop(columns.index(column))
    return table


NARROW_DROPS = ("seconds", "gap")  # columns of analyze's table left out unless --wide


def _write_sweep_analysis(result: "SweepAnalysis", out: Path, drawer: "FigureDrawer") -> list[Path]:
    """The tables (CSV) and figures (PNG + SVG, drawn by ``drawer``'s helpers) of an analysed sweep,
    replacing the previous ones together once all are written (``paths.OutputSet``)."""
    from batchlab.paths import OutputSet, check_writable_dir, shown

    with OutputSet(check_writable_dir(out, "--out folder")) as outputs:
        files = [outputs.write_csv("settings.csv", result.settings),
                 outputs.write_csv("best_per_batch.csv", result.best)]
        figures = "batchlab.plots.scaling:"
        drawer.draw(figures + "to_target_figure", result.best, result.fit, str(result.target),
                    path=outputs.path("to_target_vs_batch"))
        drawer.draw(figures + "final_metrics_figure", result.best, path=outputs.path("final_metrics_vs_batch"))
        drawer.draw(figures + "heatmap_figure", result.settings, best=result.best,
                    title=f"sweep {result.name!r}: final test accuracy", path=outputs.path("lr_batch_heatmap"))
        drawer.draw("learning_curves", result.at_best, result.curve_metric,
                    title="Learning curves at each batch size's best lr", path=outputs.path("learning_curves_best_lr"))
        files += [file for figure in drawer.files() for file in figure]
    return [shown(f) for f in files]
