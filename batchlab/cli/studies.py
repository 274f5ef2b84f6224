"""Commands that run the named studies: ``study`` and ``tour``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from batchlab.cli import DEFAULT_DB, app, console, expect_interrupts, progress_bar, say
from batchlab.errors import BatchlabError

if TYPE_CHECKING:
    from batchlab.figure_helpers import FigureDrawer
    from batchlab.studies.runner import PendingStudy, StudyResult


def _parse_sets(items: list[str]) -> dict[str, str]:
    """``["seeds=5", "data=mnist1d"]`` -> {"seeds": "5", "data": "mnist1d"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BatchlabError(f"--set takes key=value, got {item!r}")
        out[key.strip()] = value
    return out


def _list_studies(wide: bool = False) -> None:
    from rich.table import Table

    from batchlab.studies import available, get_study
    from batchlab.studies.runner import count_runs

    table = Table(title="batchlab studies (batchlab study NAME [--quick] [--set key=value])")
    table.add_column("study", no_wrap=True)
    table.add_column("question (source)", ratio=1)
    table.add_column("runs", justify="right", no_wrap=True)
    table.add_column("time (quick)", no_wrap=True)
    for name in available():
        st = get_study(name)
        source = st.source.split(",")[0].split(" (")[0]
        table.add_row(name, f"{st.question} ({source})", f"{count_runs(st, st.settings())}",
                      f"{st.minutes[0]:g} min ({st.minutes[1] * 60:.0f} s)")
    console(wide).print(table)


def _start_one_study(name: str, *, quick: bool, overrides: dict, db: Path, out: Optional[Path], force: bool,
                     drawer: "FigureDrawer") -> "PendingStudy":
    from batchlab.studies import get_study
    from batchlab.studies.runner import start_study

    bar, advance = progress_bar(1, f"study {name}" + (" (quick)" if quick else ""))
    with bar:
        return start_study(get_study(name), quick=quick, overrides=overrides, db=db, out=out, force=force,
                           progress=advance, drawer=drawer,
                           on_start=lambda total: bar.update(bar.task_ids[0], total=max(total, 1)))


def _print_study(result: "StudyResult") -> None:
    from batchlab.analysis.findings import QUICK_LABEL
    from batchlab.studies import get_study

    size = f", {QUICK_LABEL}" if result.quick else ""
    say(f"# {result.name}: {get_study(result.name).question}  ({result.seconds:.1f} s, "
        f"{len(result.run_ids)} runs{size})")
    for finding in result.findings:
        say(finding.markdown(result.quick))
    say("wrote: " + ", ".join(str(f) for f in result.files if f.suffix in (".png", ".md")) + "\n")


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
          force: bool = typer.Option(False, help="recompute runs already in the store"),
          wide: bool = typer.Option(False, "--wide", help="tables as wide as they need, whatever the terminal")) -> None:
    """Reproduce a published experiment: train what is missing, then figures, tables and findings.md."""
    from batchlab.figure_helpers import FigureDrawer
    from batchlab.studies import available

    if name == "list":
        _list_studies(wide)
        return
    overrides = _parse_sets(settings)
    overrides.update({k: v for k, v in (("seeds", seeds), ("epochs", epochs)) if v is not None})
    if name == "all" and overrides:
        raise BatchlabError("settings (--set, --seeds, --epochs) apply to one study; 'all' runs each at its own")
    names = available() if name == "all" else [name]
    expect_interrupts(db)
    with FigureDrawer() as drawer:  # before JAX is imported: its helpers are forked now
        from batchlab.studies.runner import finish_in_turn

        started = (_start_one_study(each, quick=quick, overrides=overrides if name != "all" else {}, db=db,
                                    out=(out / each if name == "all" else out) if out is not None else None,
                                    force=force, drawer=drawer) for each in names)
        for result in finish_in_turn(started):  # a study's figures are drawn while the next ones train
            _print_study(result)


@app.command()
def tour(db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
         out: Path = typer.Option(Path("results"), help="folder for each study's figures and findings"),
         report_dir: Path = typer.Option(Path("report"), "--report", help="folder for the HTML report")) -> None:
    """Every study at --quick size, then the report: the whole of batchlab in a few minutes."""
    from batchlab.figure_helpers import FigureDrawer

    expect_interrupts(db)
    with FigureDrawer() as drawer:  # first: its helpers are forked before JAX is imported
        from batchlab.analysis.findings import QUICK_LABEL
        from batchlab.paths import check_writable_dir
        from batchlab.report import build_report
        from batchlab.studies import available, get_study
        from batchlab.studies.runner import count_runs, finish_in_turn, start_study

        check_writable_dir(report_dir, "--report folder")  # before the first study trains
        check_writable_dir(out, "--out folder")
        names = available()
        studies = {name: get_study(name) for name in names}
        # The whole tour's run-epochs up front (every setting checked on the way), so one bar
        # fills once; runs already stored count as done when their study starts.
        work = {name: count_runs(st, st.settings(quick=True), epochs=True) for name, st in studies.items()}
        bar, advance = progress_bar(sum(work.values()), "tour")
        task = bar.task_ids[0]

        def started():
            for i, name in enumerate(names, 1):
                bar.update(task, description=f"study {i}/{len(names)}: {name}")
                done = sum(work[n] for n in names[:i - 1])
                bar.update(task, completed=max(bar.tasks[0].completed, done))
                yield start_study(studies[name], quick=True, db=db, out=out / name, progress=advance,
                                  drawer=drawer)

        with bar:
            # a study's figures are drawn while the next ones train
            summary = [_summary_line(result) for result in finish_in_turn(started())]
            bar.update(task, completed=bar.tasks[0].total, description="writing the report")
            path = build_report(db, report_dir, drawer=drawer)
    say("\n".join([f"{QUICK_LABEL}: every study at --quick size (findings.md in each folder of {out}):",
                    *summary]))
    say(f"report: {path} (open it in a browser: file://{Path(path).resolve()})")


def _summary_line(result) -> str:
    """A study's line in the tour's summary: its time and how many findings agree, disagree or are inconclusive."""
    verdicts = [f.verdict for f in result.findings]
    return f"{result.name:<15} {result.seconds:5.1f} s  " + ", ".join(
        f"{verdicts.count(v)} {v}" for v in ("agrees", "disagrees", "inconclusive") if v in verdicts) + " (quick)"
