"""``build_report``: the store -> one self-contained HTML page.

The page has an overview that links every recorded study, every sweep and every group of
plain training runs, then one section each (``studies.py``, ``sweeps.py``, ``runs.py``).
Everything is read from the store, so the page can be rebuilt at any time, by a process that
never trained anything, and it comes out byte for byte the same: no build time is written,
and figures are saved with fixed ids (``figures.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from batchlab.errors import BatchlabError
from batchlab.figure_helpers import FigureDrawer
from batchlab.paths import check_writable_dir, write_output
from batchlab.report import html as h
from batchlab.report.concepts import CONCEPTS
from batchlab.report.html import Section


def build_report(db: str | Path, out_dir: str | Path, study: str | None = None,
                 drawer: FigureDrawer | None = None) -> Path:
    """Write the report of store ``db`` into ``out_dir`` and return the file's path.

    Without ``study``: ``out_dir/index.html`` with every study, sweep and group of training
    runs. With ``study``: ``out_dir/<study>.html``, that study's page alone. Sections whose
    figures cannot be rebuilt say why on the page (and in a warning) instead of failing.
    ``drawer``: a command's figure helpers, which then build the studies' sections (their
    analyses and figures) side by side while this process builds the others. The page replaces
    the previous one only once written whole (``paths.write_output``).
    """
    db, out_dir = Path(db), Path(out_dir)
    studies, sweeps, loose = _read_store(db, loose=study is None)
    check_writable_dir(out_dir, "report folder")
    if study is not None:
        return _study_page(study, studies, db, out_dir)

    sections = _sections(studies, sweeps, loose, db, drawer or FigureDrawer(helpers=0))
    for section in sections:
        for problem in section.problems:
            warnings.warn(f"report, {section.title}: {problem}", stacklevel=2)
    monitored = sum(run.monitored is not None for run in loose)
    counts = _counts(sections, studies, sweeps, len(loose) - monitored, monitored)
    if not sections:
        counts += ('<p class="notice">This store holds nothing to show yet. Fill it with, for example, '
                   f'<code>batchlab study brownlee --quick --db {h.esc(db.name)}</code> or '
                   f'<code>batchlab train --db {h.esc(db.name)}</code>, then build the report again.</p>')
    body = _header(db, "batchlab report", counts) + _overview(sections) + \
        "".join(s.body for s in sections) + _glossary()
    return write_output(out_dir / "index.html", h.page("batchlab report", body, _nav(sections)))


def _read_store(db: Path, loose: bool) -> tuple[dict, dict, list]:
    """The store's studies (records by name), its sweeps (spec and run ids by name) and, if
    ``loose``, the runs that belong to no study or sweep (else ``[]``)."""
    from batchlab.store import Store

    with Store(db, create=False) as store:
        studies = store.studies()  # advices (kind "advice") too: they are recorded the same way
        sweeps = {name: (spec, store.sweep_run_ids(name)) for name, spec in store.sweeps().items()}
        if not loose:
            return studies, sweeps, []
        claimed = {r for record in studies.values() for ids in record.get("groups", {}).values() for r in ids}
        claimed |= {r for _, ids in sweeps.values() for r in ids}
        return studies, sweeps, [run for run in store.load(steps=False) if run.run_id not in claimed]


def _study_page(name: str, studies: dict, db: Path, out_dir: Path) -> Path:
    """Write study ``name``'s page alone, ``out_dir/<name>.html``, and return its path."""
    if name not in studies:
        known = ", ".join(sorted(studies)) or "none"
        raise BatchlabError(f"no study {name!r} recorded in {db} (recorded: {known}); "
                            f"run it first: batchlab study {name} --db {db}")
    if studies[name].get("kind") == "advice":
        from batchlab.report.advice import advice_section

        section = advice_section(name, studies[name])
    else:
        section = _study(name, studies[name], db, alone=True)
    text = h.page(f"batchlab · {name}", _header(db, f"Study {name}", "") + section.body)
    return write_output(out_dir / f"{h.slug(name)}.html", text)


def _sections(studies: dict, sweeps: dict, loose: list, db: Path, drawer: FigureDrawer) -> list[Section]:
    """Every section of the full page: the studies (sent to ``drawer`` first, so that its helpers
    build them while this process builds the sweeps and the groups of runs), then the sweeps,
    then the groups of training runs."""
    from batchlab.report.advice import advice_section
    from batchlab.report.monitored import monitored_section
    from batchlab.report.runs import runs_sections
    from batchlab.report.sweeps import sweep_section

    advices = {name: record for name, record in studies.items() if record.get("kind") == "advice"}
    for name in sorted(set(studies) - set(advices)):
        drawer.call("batchlab.report.studies:study_section", name, studies[name], db)
    first = [_guarded(lambda: advice_section(name, record), f"advice-{h.slug(name)}", "advice", name)
             for name, record in sorted(advices.items())]
    later = [_guarded(lambda: sweep_section(name, spec, ids, db), f"sweep-{h.slug(name)}", "sweep", name)
             for name, (spec, ids) in sorted(sweeps.items())]
    trained = [run for run in loose if run.monitored is None]
    monitored = [run for run in loose if run.monitored is not None]  # per update only: a section of their own
    later += _guarded(lambda: runs_sections(trained), "runs", "training runs", "training runs", many=True)
    later += _guarded(lambda: monitored_section(monitored), "monitored", "monitored runs", "monitored runs",
                      many=True)
    sections = []
    for section in drawer.results():  # study_section turns a study's failures into notices
        if isinstance(section, Exception):
            raise section
        sections.append(section)
    return first + sections + later


def _study(name: str, record: dict, db: Path, alone: bool = False) -> Section:
    from batchlab.report.studies import study_section

    return study_section(name, record, db, alone=alone)


def _guarded(build, anchor: str, kind: str, title: str, many: bool = False):
    """``build()``, or a section that says why it could not be built (one bad sweep must not
    hide the rest of the report)."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001
        problem = f"could not rebuild from the store: {type(exc).__name__}: {exc}"
        body = (h.section_start(anchor, kind, title) + f'<p class="notice">{h.esc(problem)}</p></section>')
        card = f'<div class="card"><h4><a href="#{anchor}">{h.esc(title)}</a></h4><p>{h.esc(problem)}</p></div>'
        section = Section(anchor, "runs" if many else kind, title, body, card, problems=[problem])
        return [section] if many else section


def _header(db: Path, title: str, extra: str) -> str:
    return (f"<h1>{h.esc(title)}</h1><p class=\"lead\">Built from the run store <code>{h.esc(db.name)}</code>. "
            "Every figure, table and finding is recomputed from the stored runs; this file works offline.</p>" + extra)


def _counts(sections: list[Section], studies: dict, sweeps: dict, loose: int, monitored: int = 0) -> str:
    """What the store holds, in words: "10 studies (183 runs) · 1 sweep (16 runs)"; kinds it
    holds none of are left out (the overview says so), and an empty store gets no line."""
    kinds = [s.kind for s in sections]
    study_runs = {r for record in studies.values() if record.get("kind") != "advice"
                  for ids in record.get("groups", {}).values() for r in ids}
    sweep_runs = {r for _, ids in sweeps.values() for r in ids}
    parts = []
    if kinds.count("advice"):
        parts.append(_count(kinds.count("advice"), "advice", "advices"))
    if kinds.count("study"):
        parts.append(f"{_count(kinds.count('study'), 'study', 'studies')} ({_count(len(study_runs), 'run')})")
    if kinds.count("sweep"):
        parts.append(f"{_count(kinds.count('sweep'), 'sweep')} ({_count(len(sweep_runs), 'run')})")
    if kinds.count("runs"):
        parts.append(f"{_count(kinds.count('runs'), 'group')} of training runs ({_count(loose, 'run')})")
    if kinds.count("monitored"):
        parts.append(_count(monitored, "monitored run"))
    return f'<p class="meta">{h.esc(" · ".join(parts))}</p>' if parts else ""


def _count(n: int, one: str, many: str | None = None) -> str:
    """``3 studies``, ``1 study``: a count with its noun."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


KIND_NAMES = {"advice": "Advice", "study": "Studies", "sweep": "Sweeps", "runs": "Training runs",
              "monitored": "Monitored runs"}
KIND_HINTS = {"advice": "Which batch size, learning rate and epochs for a model, with the evidence (batchlab advise).",
              "study": "Each study asks one published question and checks it against runs stored here.",
              "sweep": "Batch size x learning rate grids: the best learning rate per batch size and the critical "
                       "batch size.",
              "runs": "Runs from batchlab train that belong to no study or sweep, grouped by data, model and "
                      "optimizer.",
              "monitored": "Runs trained by your own loop and measured by batchlab.monitor, per update."}
ABSENT = {"study": "no studies", "sweep": "no sweeps", "runs": "no plain training runs (runs in no study or sweep)"}


def _overview(sections: list[Section]) -> str:
    """A heading and cards for each kind of section the store has; the kinds it has none of are
    named in one sentence instead of a heading each over "None"."""
    parts = ['<section aria-labelledby="overview"><h2 id="overview">Overview</h2>']
    absent = []
    for kind, name in KIND_NAMES.items():
        cards = [s.card for s in sections if s.kind == kind]
        if not cards:
            if kind in ABSENT:  # a store without advice or monitored runs is usual: not worth a word
                absent.append(ABSENT[kind])
            continue
        parts.append(f"<h3>{name}</h3><p>{KIND_HINTS[kind]}</p><div class=\"cards\">{''.join(cards)}</div>")
    if absent and len(absent) < len(KIND_NAMES):
        parts.append(f'<p class="meta">This store holds {_and(absent)}.</p>')
    parts.append('<p><a href="#glossary">Glossary: the ideas behind the studies</a></p></section>')
    return "".join(parts)


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _nav(sections: list[Section]) -> str:
    def short(title: str) -> str:
        return title if len(title) < 70 else title[:67] + "…"

    items = "".join(f'<li><a href="#{s.anchor}">{h.esc(short(s.title))}</a></li>' for s in sections)
    return (f'<nav class="toc" aria-label="contents"><div class="inner"><details><summary>Contents '
            f'({len(sections)} sections)</summary><ul><li><a href="#overview">Overview</a></li>{items}'
            f'<li><a href="#glossary">Glossary</a></li></ul></details></div></nav>')


def _glossary() -> str:
    parts = [h.section_start("glossary", "glossary", "The ideas behind the studies")]
    for key, (title, text) in CONCEPTS.items():
        parts.append(f'<h3 id="concept-{key}">{title}</h3>{text.strip()}')
    return "".join(parts) + "</section>"
