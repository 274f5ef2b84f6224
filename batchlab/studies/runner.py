"""The one study runner: validate, train what is missing, measure, analyse from the store, write.

1. Resolve the settings and every grid's runs (all validation happens here, before any
   training; the output folder is checked for writing too).
2. Runs with checkpoint instruments whose records are missing are trained with their
   checkpoints kept and measured; the records go to the store.
3. The other runs train unless already stored (one transaction per cohort), so an
   interrupted study resumes where it stopped.
4. The analysis reads the study's runs and measurements back from the store only
   (``studies/outputs.py``, which imports no training code), computes the findings and
   asks for the figures (PNG + SVG, and the table behind each as CSV).
5. Once the figures are drawn, ``findings.md`` is written and the study recorded in the store
   (settings, version, groups of runs, outputs, findings), so a report can be rebuilt later
   from the store alone. :func:`finish_in_turn` lets a command train the next studies while
   the figures of one are drawn (by helper processes, ``figure_helpers.py``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from batchlab.version import __version__
from batchlab.analysis.findings import Finding
from batchlab.api import prepare, run_configs
from batchlab.paths import check_writable_dir
from batchlab.settings import TRAINING
from batchlab.errors import BatchlabError
from batchlab.figure_helpers import FigureDrawer
from batchlab.store import Store
from batchlab.instruments.checkpoint import Checkpoint
from batchlab.studies.base import Grid, Study, Tables
from batchlab.studies.outputs import AskedOutputs, analyse_stored, ask_outputs, membership_frame

# Keyword arguments of batchlab.train that a grid may set, with train's defaults.
_TRAIN_DEFAULTS = {s.name: s.default for s in TRAINING}


@dataclass
class StudyResult:
    name: str
    settings: dict[str, Any]
    tables: Tables
    findings: list[Finding]
    files: list[Path]
    run_ids: list[str]
    seconds: float
    quick: bool = False  # run at --quick size: its numbers are indicative only


@dataclass
class PendingStudy:
    """A study trained and analysed whose figures are being drawn; :meth:`finish` waits for
    them, writes ``findings.md`` and records the study."""

    study: Study
    settings: dict[str, Any]
    quick: bool
    db: str | Path
    groups: dict[str, list[str]]  # label -> run ids, in the study's order
    tables: Tables
    findings: list[Finding]
    outputs: AskedOutputs
    seconds: float  # so far

    def ready(self) -> bool:
        """Whether its figures are drawn (:meth:`finish` would not wait)."""
        return self.outputs.ready()

    def finish(self) -> StudyResult:
        start = time.perf_counter()
        files = self.outputs.write()
        seconds = self.seconds + time.perf_counter() - start
        with Store(self.db) as store:
            store.write_study(self.study.name, {
                "settings": self.settings, "quick": self.quick, "version": __version__,
                "groups": self.groups,
                "outputs": [str(f) for f in files], "findings": [f.to_dict() for f in self.findings],
                "seconds": seconds, "created": time.time()})
        return StudyResult(self.study.name, self.settings, self.tables, self.findings, files,
                           list(dict.fromkeys(r for ids in self.groups.values() for r in ids)), seconds, self.quick)


def run_study(study: Study, **options: Any) -> StudyResult:
    """Run ``study`` end to end (see the module docstring; ``options``: :func:`start_study`'s);
    returns its tables, findings and files."""
    return start_study(study, **options).finish()


def finish_in_turn(started: Iterable[PendingStudy]) -> Iterator[StudyResult]:
    """The results of studies started one after another (``started`` starts each when asked
    for it), in that order. A study is finished once its figures are drawn, which is looked at
    after each next study has trained, and the command never waits for them before its last
    study: they are drawn meanwhile. If starting one fails, those started before it are still
    finished (their files and records kept)."""
    studies = iter(started)
    pending: deque[PendingStudy] = deque()
    while True:
        try:
            current = next(studies, None)
        except Exception:
            for study in pending:
                study.finish()
            raise
        while pending and (current is None or pending[0].ready()):
            yield pending.popleft().finish()
        if current is None:
            return
        pending.append(current)


def start_study(study: Study, *, quick: bool = False, overrides: dict[str, Any] | None = None,
                db: str | Path = "batchlab.db", out: str | Path | None = None, force: bool = False,
                progress: Callable[[int], None] | None = None, on_start: Callable[[int], None] | None = None,
                drawer: FigureDrawer | None = None) -> PendingStudy:
    """Train, measure and analyse ``study`` and ask for its figures (steps 1-4 of the module
    docstring); :meth:`PendingStudy.finish` does the rest. ``drawer``: who draws the figures
    (a command's helper processes); by default this process, when finishing."""
    start = time.perf_counter()
    settings = study.settings(quick, overrides)
    out = Path(out) if out is not None else Path("results") / study.name
    prepared = [(grid, *_prepare(grid)) for grid in study.grids(settings)]
    instruments = study.checkpoints(settings)
    _check_writable(out)
    check_not_another_study(out, study.name)
    _check_store(db)
    with Store(db) as store:
        done = set() if force else store.run_ids()
        measured = {ins.name: store.measured(ins.name) for ins in instruments}
    plans = _plan(prepared, instruments, measured, force)
    if on_start is not None:
        on_start(sum(c.epochs for _, _, need, rest, _ in plans for c in need + [c for c in rest if c.run_id not in done]))
    for dataset, net, need, rest, measures in plans:
        if need:
            epochs = tuple(sorted({e for c in need for ins in measures[c.run_id] for e in ins.epochs}))
            trained = run_configs(need, dataset, net, db=db, force=True, progress=progress, checkpoints=epochs)
            _measure(trained.runs, measures, dataset, net, settings, db)
        if rest:
            run_configs(rest, dataset, net, db=db, force=force, progress=progress)

    # The groups as the study's record keeps them (``PendingStudy.finish``), in that order: the
    # analysis here is then the one a report makes from the record, figures included.
    groups = _groups(prepared)
    tables, findings = analyse_stored(study, settings, db, membership_frame(groups))
    outputs = ask_outputs(study, settings, tables, findings, out, quick, drawer)
    return PendingStudy(study, settings, quick, db, groups, tables, findings, outputs,
                        time.perf_counter() - start)


def _plan(prepared: list[tuple], instruments: list, measured: dict, force: bool) -> list[tuple]:
    """(dataset, model, runs to train with checkpoints kept, the other runs, each run's
    checkpoint instruments) per cohort group. Runs of all grids that share data and model train
    together (runs that differ only in lr, momentum or seed share one compiled cohort whichever
    grid asked for them); a lone grid's runs one by one, each its own cohort. A run is trained
    with checkpoints when one of its measurements is missing (or with ``force``)."""
    jobs: dict[tuple, tuple] = {}
    for grid, configs, dataset, net in prepared:
        wanted = [ins for ins in instruments if ins.applies_to(grid.label)]
        key = (configs[0].data, configs[0].model) + ((grid.label,) if grid.alone else ())
        dataset, net, runs, measures = jobs.setdefault(key, (dataset, net, {}, {}))
        for c in configs:
            runs[c.run_id] = c
            measures.setdefault(c.run_id, []).extend(ins for ins in wanted if ins not in measures[c.run_id])

    def needs_measuring(c, wanted) -> bool:
        return any(force or (c.run_id, e) not in measured[ins.name] for ins in wanted for e in ins.epochs
                   if e <= c.epochs)

    plans = []
    for key, (dataset, net, runs, measures) in jobs.items():
        for batch in ([[c] for c in runs.values()] if len(key) > 2 else [list(runs.values())]):
            need = [c for c in batch if needs_measuring(c, measures[c.run_id])]
            plans.append((dataset, net, need, [c for c in batch if c not in need], measures))
    return plans


def _groups(prepared: list[tuple]) -> dict[str, list[str]]:
    """{grid label: its run ids}, in the study's order; grids that share a label pool their runs, each once."""
    groups: dict[str, list[str]] = {}
    for grid, configs, *_ in prepared:
        ids = groups.setdefault(grid.label, [])
        ids += [r for r in dict.fromkeys(c.run_id for c in configs) if r not in ids]
    return groups


def count_runs(study: Study, settings: dict, epochs: bool = False) -> int:
    """How many runs a study's grids hold (without loading data): the product of their axes'
    lengths (batch sizes x optimizers x lrs x momenta x weight decays x seeds); with
    ``epochs``, how many run-epochs (what a progress bar counts)."""
    from batchlab.settings import read_given, training_defaults

    total = 0
    for grid in study.grids(settings):
        values = {**training_defaults(), **read_given(dict(grid.train))}
        runs = math.prod(len(values[s.name]) for s in TRAINING if s.axis and values[s.name] is not None)
        total += runs * (values["epochs"] if epochs else 1)
    return total


def _prepare(grid: Grid):
    unknown = set(grid.train) - set(_TRAIN_DEFAULTS) - {"early_stopping"}
    if unknown:
        raise BatchlabError(f"grid {grid.label!r} sets unknown training option(s) {sorted(unknown)}")
    return prepare(**grid.train)


def _measure(runs, measures, dataset, net, settings, db) -> None:
    """Run each run's checkpoint instruments on its saved parameters (freshly trained runs)."""
    with Store(db) as store:
        for run in runs:
            for ins in measures[run.run_id]:
                for epoch in ins.epochs:
                    if epoch not in run.checkpoints:
                        continue  # the run stopped (diverged or early) before this checkpoint
                    rows = ins.measure(Checkpoint(run.config, epoch, run.checkpoints[epoch], dataset, net, settings))
                    store.write_measurements(run.run_id, ins.name, epoch, rows)


def _check_writable(out: Path) -> None:
    check_writable_dir(out, "study output folder")


def check_not_another_study(out: Path, name: str) -> None:
    """Refuse (before anything trains) an output folder that already holds another study's
    files: studies write files of the same names (``findings.md``, ``runs.csv``, ...), so a
    second study there would overwrite the first one's. A folder's study is the one its
    ``findings.md`` is about."""
    findings = Path(out) / "findings.md"
    if not findings.is_file():
        return
    try:
        first = findings.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return
    other = first[2:].split(":", 1)[0] if first.startswith("# ") else ""
    if other and other != name:
        raise BatchlabError(f"output folder {out} already holds the files of study {other!r}; study {name!r} "
                            f"would overwrite them: choose another --out (e.g. {Path(out) / name})")


def _check_store(db: str | Path) -> None:
    """The store must take writes before the first run trains (one-line StoreError otherwise)."""
    with Store(db) as store:
        store.check_writable()
