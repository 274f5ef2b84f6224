"""A study's results from the store alone: load its runs, analyse, draw, write.

Nothing here imports training code, so a report (or a later session) can rebuild every
table, figure and finding of a recorded study without JAX or the engine.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd

from batchlab.analysis.findings import QUICK_LABEL, Finding
from batchlab.figure_helpers import FigureDrawer
from batchlab.paths import OutputSet, shown
from batchlab.store import Store, series_frame, summary_frame
from batchlab.studies.base import Study, StudyData, Tables


def membership_frame(groups: dict[str, list[str]]) -> pd.DataFrame:
    """{group label: [run ids]} (as a study record stores it) -> rows (run_id, group)."""
    return pd.DataFrame([(r, g) for g, ids in groups.items() for r in ids], columns=["run_id", "group"])


def analyse_stored(study: Study, settings: dict, db: str | Path, membership: pd.DataFrame
                   ) -> tuple[Tables, list[Finding]]:
    """The study's tables and findings, computed from its stored runs and measurements."""
    data = load_study_data(db, membership, steps=study.steps)
    tables = study.analyse(data, settings)
    return tables, study.findings(tables, settings)


def load_study_data(db: str | Path, membership: pd.DataFrame, *, steps: bool = False) -> StudyData:
    """The runs of ``membership`` (columns run_id, group) and their measurements, from the store.

    A run that belongs to two groups (the same settings asked for twice) appears in each:
    every frame has one row per group the run is in, with that group in column ``group``.
    """
    with Store(db, create=False) as store:
        runs = store.load(list(dict.fromkeys(membership.run_id)), steps=steps)
        measurements = store.measurements()
    if measurements.empty:
        measurements = pd.DataFrame(columns=["run_id", "instrument", "epoch"])

    def grouped(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return frame
        frame = membership.merge(frame, on="run_id", sort=False)
        return frame[["run_id", "group"] + [c for c in frame.columns if c not in ("run_id", "group")]]

    frames = [grouped(series_frame(runs, "epoch")), grouped(summary_frame(runs)),
              grouped(series_frame(runs, "step")) if steps else pd.DataFrame(), grouped(measurements)]
    return StudyData(*frames, runs=runs)


def draw_study_figure(spec, tables: Tables, settings: dict, quick: bool = False):
    """The figure of ``spec`` (a :class:`~batchlab.studies.base.FigureSpec`), labelled quick
    size above its title when ``quick`` (``plots/size_label.py``)."""
    fig = spec.draw(tables, settings)
    if quick:
        from batchlab.plots.size_label import mark_quick

        mark_quick(fig)
    return fig


def write_study_figure(study_name: str, figure_name: str, tables: Tables, settings: dict, path: Path,
                       quick: bool = False) -> list[Path]:
    """Draw the figure ``figure_name`` of the registered study ``study_name`` to ``path`` (PNG
    and SVG) and keep its SVG for the report (``plots/memo.py``); run by a figure helper
    process, which cannot be handed the study's drawing function itself."""
    from batchlab.plots import memo, save_figure
    from batchlab.studies import get_study

    spec = next(spec for spec in get_study(study_name).figures if spec.name == figure_name)
    key = memo.figure_key(study_name, figure_name, tables, settings, quick)
    files = save_figure(draw_study_figure(spec, tables, settings, quick), path)
    memo.remember(key, files[1].read_text(encoding="utf-8"))
    return files


class AskedOutputs(NamedTuple):
    """A study's outputs, asked for: ``ready()`` says (without waiting) whether its figures are
    drawn; ``write()`` waits for them, writes ``findings.md`` and returns every file written."""

    ready: Callable[[], bool]
    write: Callable[[], list[Path]]


def ask_outputs(study: Study, settings: dict, tables: Tables, findings: list[Finding], out: Path,
                quick: bool, drawer: FigureDrawer | None = None) -> AskedOutputs:
    """Ask for the figures (PNG + SVG; by ``drawer``'s helper processes where the study is
    registered) and write every table (CSV, the one behind each figure included); the figures
    are drawn while the command goes on (it can train the next study meanwhile). Figures, tables
    and ``findings.md`` replace the previous ones in ``out`` together, once all are written
    (``paths.OutputSet``)."""
    drawer = drawer or FigureDrawer(helpers=0)  # no helpers given: drawn in this process
    outputs = OutputSet(out)
    tickets, csvs, others = [], [], []
    try:
        tickets = _ask_figures(study, settings, tables, outputs, quick, drawer)
        csvs = [outputs.write_csv(f"{spec.name}.csv", tables[spec.table]) for spec in study.figures]
        figure_tables = {spec.table for spec in study.figures}
        others = [outputs.write_csv(f"{name}.csv", table) for name, table in tables.items()
                  if name not in figure_tables]
        notes = study.notes(tables, settings)
    except BaseException:
        outputs.discard()
        raise

    def write() -> list[Path]:
        try:
            files = [shown(f) for figure, csv in zip(drawer.files(tickets), csvs) for f in (*figure, csv)]
            files += [shown(f) for f in others]
            outputs.write("findings.md", findings_markdown(study, settings, findings, files, quick, notes))
        except BaseException:
            outputs.discard()
            raise
        outputs.commit()
        return files + [out / "findings.md"]

    return AskedOutputs(lambda: drawer.ready(tickets), write)


def _ask_figures(study: Study, settings: dict, tables: Tables, outputs: OutputSet, quick: bool,
                 drawer: FigureDrawer) -> list[int]:
    """Each figure of ``study`` asked of ``drawer``: by name where the study is registered (a
    helper process imports it), as a function otherwise (drawn in this process)."""
    from batchlab.studies import REGISTRY, get_study

    registered = study.name in REGISTRY and get_study(study.name) is study
    tickets = []
    for spec in study.figures:
        if registered:
            tickets.append(drawer.call(f"{__name__}:write_study_figure", study.name, spec.name, tables,
                                       settings, outputs.path(spec.name), quick))
        else:
            tickets.append(drawer.draw(partial(draw_study_figure, spec), tables, settings, quick,
                                       path=outputs.path(spec.name)))
    return tickets


def findings_markdown(study: Study, settings: dict, findings: list[Finding], files: list[Path], quick: bool,
                      notes: list[str]) -> str:
    size = f"quick size (--quick): {QUICK_LABEL}" if quick else "faithful size"
    lines = [f"# {study.name}: {study.question}", ""]
    if quick:
        lines += [f"> **{QUICK_LABEL.capitalize()}.** This study ran at --quick size (fewer seeds, epochs and batch "
                  "sizes): its verdicts can differ from the faithful study's, and a finding whose precondition "
                  "fails at this size says so instead of giving a verdict.", ""]
    lines += [f"Source: {study.source}. Run at {size}.", "", "## Findings", ""]
    lines += [f.markdown(quick) for f in findings] or ["(no findings)"]
    if notes:
        lines += ["", "## How to read this", ""] + [line for note in notes for line in (note, "")][:-1]
    lines += ["", "Intervals are 95%, each finding naming its method (``batchlab/analysis/intervals.py``: t over "
              "seeds, kept within the quantity's range; t on the log scale for positive quantities; Welch t for "
              "differences; Welch-Satterthwaite t for slopes; percentile bootstrap only over many trials). A "
              "verdict is *inconclusive* when the interval does not decide the claim, or when a precondition is "
              "not met (the finding then says which).", "", "## Settings", ""]
    lines += [f"- `{key}` = {value}" for key, value in settings.items()]
    lines += ["", "## Files", ""] + [f"- {f.name}" for f in files if f.suffix in (".png", ".csv")] + [""]
    return "\n".join(lines)
