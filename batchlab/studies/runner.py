"""The one study runner: validate, train what is missing, measure, analyse from the store, write.

1. Resolve the settings and every grid's runs (all validation happens here, before any
   training; the output folder is checked for writing too).
2. Runs with checkpoint instruments whose records are missing are trained with their
   checkpoints kept and measured; the records go to the store.
3. The other runs train unless already stored (one transaction per cohort), so an
   interrupted study resumes where it stopped.
4. The analysis reads the study's runs and measurements back from the store only, draws the
   figures (PNG + SVG, and the table behind each as CSV), computes the findings, writes
   ``findings.md`` and records the study (settings, version, runs, outputs, findings) in
   the store, so a report can be rebuilt later without retraining.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from batchlab import __version__
from batchlab.analysis.findings import Finding
from batchlab.api import prepare, run_configs, train
from batchlab.errors import BatchlabError
from batchlab.store import Store, series_frame, summary_frame
from batchlab.studies.base import Checkpoint, Grid, Study, StudyData, Tables

# Keyword arguments of batchlab.train that a grid may set, with train's defaults.
_TRAIN_DEFAULTS = {name: p.default for name, p in inspect.signature(train).parameters.items()
                   if name not in ("db", "force", "progress")}


@dataclass
class StudyResult:
    name: str
    settings: dict[str, Any]
    tables: Tables
    findings: list[Finding]
    files: list[Path]
    run_ids: list[str]
    seconds: float


def run_study(study: Study, *, quick: bool = False, overrides: dict[str, Any] | None = None,
              db: str | Path = "batchlab.db", out: str | Path | None = None, force: bool = False,
              progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None
              ) -> StudyResult:
    """Run ``study`` end to end (see the module docstring); returns its tables and findings."""
    start = time.perf_counter()
    settings = study.settings(quick, overrides)
    out = Path(out) if out is not None else Path("results") / study.name
    prepared = [(grid, *_prepare(grid)) for grid in study.grids(settings)]
    instruments = study.checkpoints(settings)
    _check_writable(out)

    with Store(db) as store:
        done = set() if force else store.run_ids()
        measured = {ins.name: store.measured(ins.name) for ins in instruments}
    plans = []
    for grid, configs, dataset, net in prepared:
        wanted = [ins for ins in instruments if ins.applies_to(grid.label)]
        need = [c for c in configs if any((c.run_id, e) not in measured[ins.name] or force
                                          for ins in wanted for e in ins.epochs if e <= c.epochs)]
        plans.append((grid, configs, dataset, net, wanted, need))
    if on_start is not None:
        on_start(sum(c.epochs for _, configs, _, _, _, need in plans for c in configs
                     if c.run_id not in done or c in need))

    for grid, configs, dataset, net, wanted, need in plans:
        if need:
            epochs = tuple(sorted({e for ins in wanted for e in ins.epochs}))
            trained = run_configs(need, dataset, net, db=db, force=True, progress=progress, checkpoints=epochs)
            _measure(trained.runs, wanted, dataset, net, settings, db)
        rest = [c for c in configs if c not in need]
        if rest:
            run_configs(rest, dataset, net, db=db, force=force, progress=progress)

    membership = pd.DataFrame([(c.run_id, grid.label) for grid, configs, *_ in prepared for c in configs],
                              columns=["run_id", "group"]).drop_duplicates()
    data = load_study_data(db, membership, steps=study.steps)
    tables = study.analyse(data, settings)
    findings = study.findings(tables, settings)
    files = write_outputs(study, settings, tables, findings, out, quick)
    seconds = time.perf_counter() - start
    with Store(db) as store:
        store.write_study(study.name, {
            "settings": settings, "quick": quick, "version": __version__,
            "groups": membership.groupby("group", sort=False).run_id.apply(list).to_dict(), "outputs": [str(f) for f in files], "findings": [f.to_dict() for f in findings],
            "seconds": seconds, "created": time.time()})
    return StudyResult(study.name, settings, tables, findings, files, list(dict.fromkeys(membership.run_id)), seconds)


def count_runs(study: Study, settings: dict) -> int:
    """How many runs a study's grids hold (without loading data): batch sizes x lrs x momenta x seeds."""
    from batchlab.config import parse_batch_sizes, parse_floats, parse_seeds

    total = 0
    for grid in study.grids(settings):
        kwargs = {**_TRAIN_DEFAULTS, **grid.train}
        total += (len(parse_batch_sizes(kwargs["batch_size"])) * len(parse_floats(kwargs["lr"], "lr"))
                  * len(parse_floats(kwargs["momentum"], "momentum")) * len(parse_seeds(kwargs["seeds"])))
    return total


def _prepare(grid: Grid):
    unknown = set(grid.train) - set(_TRAIN_DEFAULTS)
    if unknown:
        raise BatchlabError(f"grid {grid.label!r} sets unknown training option(s) {sorted(unknown)}")
    kwargs = {**_TRAIN_DEFAULTS, **grid.train}
    return prepare(kwargs.pop("data"), kwargs.pop("model"), **kwargs)


def _measure(runs, wanted, dataset, net, settings, db) -> None:
    """Run each checkpoint instrument on the saved parameters of freshly trained runs."""
    with Store(db) as store:
        for run in runs:
            for ins in wanted:
                for epoch in ins.epochs:
                    if epoch not in run.checkpoints:
                        continue  # the run stopped (diverged or early) before this checkpoint
                    rows = ins.measure(Checkpoint(run.config, epoch, run.checkpoints[epoch], dataset, net, settings))
                    store.write_measurements(run.run_id, ins.name, epoch, rows)


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".batchlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BatchlabError(f"cannot write study outputs to {out} ({exc.strerror or exc})") from None


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


def write_outputs(study: Study, settings: dict, tables: Tables, findings: list[Finding], out: Path,
                  quick: bool) -> list[Path]:
    """Figures (PNG + SVG), the table behind each (CSV), every table, and ``findings.md``."""
    from batchlab.plots import save_figure

    files: list[Path] = []
    for spec in study.figures:
        files += save_figure(spec.draw(tables, settings), out / spec.name)
        csv = out / f"{spec.name}.csv"
        tables[spec.table].to_csv(csv, index=False)
        files.append(csv)
    figure_tables = {spec.table for spec in study.figures}
    for name, table in tables.items():
        if name not in figure_tables:
            path = out / f"{name}.csv"
            table.to_csv(path, index=False)
            files.append(path)
    md = out / "findings.md"
    md.write_text(findings_markdown(study, settings, findings, files, quick, study.notes(tables, settings)))
    return files + [md]


def findings_markdown(study: Study, settings: dict, findings: list[Finding], files: list[Path], quick: bool,
                      notes: list[str]) -> str:
    size = "quick size (--quick): numbers are indicative only" if quick else "faithful size"
    lines = [f"# {study.name}: {study.question}", "", f"Source: {study.source}. Run at {size}.", "",
             "## Findings", ""]
    lines += [f.markdown() for f in findings] or ["(no findings)"]
    if notes:
        lines += ["", "## How to read this", ""] + notes
    lines += ["", "Intervals are 95% (t-intervals over seeds, or bootstrap where stated). A verdict is "
              "*inconclusive* when the interval contains zero or there are fewer than 2 seeds.", "",
              "## Settings", ""]
    lines += [f"- `{key}` = {value}" for key, value in settings.items()]
    lines += ["", "## Files", ""] + [f"- {f.name}" for f in files if f.suffix in (".png", ".csv")] + [""]
    return "\n".join(lines)
