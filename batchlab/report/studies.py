"""A recorded study's section: question, source, figures, findings, concepts, settings.

Figures, tables and findings are rebuilt from the store with the study's own analysis and
figure functions (``studies/outputs.py``), the code path ``batchlab study`` writes its files
with, so the page and the files on disk never disagree. A study whose module this batchlab no
longer has, or whose analysis fails on the stored runs, still shows its recorded findings
with a notice saying why the figures are missing.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from batchlab.analysis.findings import QUICK_LABEL
from batchlab.plots.memo import figure_key
from batchlab.report import html as h
from batchlab.report.concepts import concepts_for_study, concepts_html
from batchlab.report.curves import chart_data
from batchlab.report.figures import draw_svg
from batchlab.report.html import Section
from batchlab.report.markdown import markdown_html
from batchlab.report.runs import settings_details


def study_section(name: str, record: dict, db: str | Path, *, alone: bool = False) -> Section:
    """The section of study ``name`` from its stored ``record``; ``alone`` for a page of its own
    (its first concept shown open: there is no glossary to turn to)."""
    from batchlab.studies.outputs import membership_frame

    anchor = f"study-{h.slug(name)}"
    settings = record.get("settings", {})
    quick = bool(record.get("quick"))
    problems: list[str] = []
    study, question, source = _identify(name, record, problems)
    membership = membership_frame(record.get("groups", {}))
    shown = _Shown(findings=[_finding_dict(f) for f in record.get("findings", [])])
    if study is not None and not membership.empty:
        try:
            _rebuild(shown, name, study, anchor, settings, db, membership, problems, quick)
        except Exception as exc:  # noqa: BLE001 - one broken study must not hide the others
            problems.append(f"could not rebuild the figures from the store: {type(exc).__name__}: {exc}")

    parts = [h.section_start(anchor, "study", f"{name}: {question}")]
    parts.append(f'<p class="lead">Source: {h.esc(source)}.</p>' if source else "")
    parts.append(_meta(record, membership))
    if quick:
        parts.append(f'<p class="notice quick-size">{h.esc(QUICK_LABEL.capitalize())}: this study ran at --quick '
                     "size (fewer seeds, epochs and batch sizes); its verdicts can differ from the faithful study's.</p>")
    parts += [f'<p class="notice">{h.esc(p)}</p>' for p in problems]
    parts.append(concepts_html(concepts_for_study(name), open_first=alone))
    parts.append("<h3>Findings</h3>" + findings_html(shown.findings, quick))
    if shown.notes:
        parts.append('<h3>How to read this</h3><div class="notes">' + markdown_html(shown.notes) + "</div>")
    if shown.chart:
        parts.append("<h3>Learning curves (interactive)</h3>" + shown.chart)
    if shown.figures:
        parts.append("<h3>Figures</h3>" + "".join(shown.figures))
    parts.append(_settings_block(settings, shown.runs))
    parts.append("</section>")
    return Section(anchor, "study", f"{name}: {question}", "".join(parts),
                   _card(anchor, name, question, shown.findings, quick), len(shown.figures), 1 if shown.chart else 0,
                   problems)


@dataclass
class _Shown:
    """What a study's section shows beyond its record: ``_rebuild`` fills it from the store."""

    findings: list[dict]  # the recorded ones until the analysis recomputes them
    notes: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # <figure> markup
    chart: str = ""
    runs: list = field(default_factory=list)  # for the resolved settings


def _identify(name: str, record: dict, problems: list[str]) -> tuple[object | None, str, str]:
    """The study called ``name`` (None, with a problem noted, if this batchlab has none), its
    question and its source (this batchlab's, else the record's)."""
    from batchlab.studies import get_study

    study = None
    try:
        study = get_study(name)
    except Exception as exc:  # a study recorded by another batchlab version
        problems.append(f"this batchlab has no study called {name!r} ({exc}); showing its recorded findings only")
    question = study.question if study else record.get("question", "")
    source = study.source if study else (record.get("findings") or [{}])[0].get("source", "")
    return study, question, source


def _rebuild(shown: _Shown, name: str, study, anchor: str, settings: dict, db: str | Path,
             membership: pd.DataFrame, problems: list[str], quick: bool = False) -> None:
    """Recompute the study's findings, notes, figures and chart from the stored runs into
    ``shown``, in that order; a failure part way keeps what came before it (the caller notes
    it). A figure that cannot be drawn is noted in ``problems`` and the others still are."""
    from batchlab.studies.outputs import analyse_stored, draw_study_figure, load_study_data

    tables, computed = analyse_stored(study, settings, db, membership)
    shown.findings = [f.to_dict() for f in computed]
    shown.notes = study.notes(tables, settings)
    for k, spec in enumerate(study.figures):
        caption = _caption(spec.name)
        try:
            svg = draw_svg(lambda spec=spec: draw_study_figure(spec, tables, settings, quick), f"{anchor}-f{k}",
                           caption, figure_key(name, spec.name, tables, settings, quick))
        except Exception as exc:  # noqa: BLE001 - show the other figures
            problems.append(f"figure {spec.name} could not be drawn: {type(exc).__name__}: {exc}")
            continue
        shown.figures.append(h.figure(svg, caption, f"{anchor}-{h.slug(spec.name)}"))
    data = load_study_data(db, membership)
    shown.runs = data.runs
    shown.chart = h.chart(f"{anchor}-chart", f"{name}: learning curves of every group of runs",
                          chart_data(data.history, data.summary, prefix="group"))


def _card(anchor: str, name: str, question: str, findings: list[dict], quick: bool = False) -> str:
    verdicts = [f["verdict"] for f in findings]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("agrees", "disagrees", "inconclusive") if v in verdicts)
    size = f' <span class="badge badge-quick">{h.esc(QUICK_LABEL)}</span>' if quick else ""
    return (f'<div class="card"><h4><a href="#{anchor}">{h.esc(name)}</a></h4><p>{h.esc(question)}</p>'
            f'<p class="meta">{len(findings)} finding{"s" if len(findings) != 1 else ""}'
            f'{": " + counts if counts else ""}{size}</p></div>')


def findings_html(findings: list[dict], quick: bool = False) -> str:
    if not findings:
        return "<p>(no findings recorded)</p>"
    items = []
    size = f'<span class="badge badge-quick">{h.esc(QUICK_LABEL)}</span>' if quick else ""
    for f in findings:
        verdict = str(f.get("verdict", ""))
        reason = f'<div class="measured">Not decided: {h.esc(f["reason"])}.</div>' if f.get("reason") else ""
        items.append(f'<li class="{h.esc(verdict)}">{h.badge(verdict)}{size}'
                     f'<span class="claim">{h.esc(f.get("claim", ""))}</span>'
                     f'<div class="measured">Measured: {h.esc(f.get("measured", ""))}</div>{reason}</li>')
    return ('<ul class="findings">' + "".join(items) + "</ul>"
            '<p class="meta">Intervals are 95 %, each finding naming its method. A verdict is <i>inconclusive</i> '
            "when the interval does not decide the claim or a precondition is not met (the finding says which).</p>")


def _finding_dict(f: dict) -> dict:
    return {k: f.get(k, "") for k in ("claim", "source", "measured", "verdict", "reason")}


_WORDS = {"acc": "accuracy", "lr": "learning rate", "vs": "vs", "sq": "squared"}


def _caption(name: str) -> str:
    """A figure's file name as words: ``learning_curves_acc`` -> 'Learning curves, accuracy'."""
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _meta(record: dict, membership: pd.DataFrame) -> str:
    size = "quick size (--quick): numbers are indicative only" if record.get("quick") else "faithful size"
    bits = [f"{membership.run_id.nunique():,} runs" if not membership.empty else "no runs recorded", size]
    if record.get("seconds") is not None:
        bits.append(f"took {h.fmt_seconds(record['seconds'])}")
    if record.get("created"):
        stamp = _dt.datetime.fromtimestamp(float(record["created"]), _dt.timezone.utc)
        bits.append(f"recorded {stamp:%Y-%m-%d %H:%M} UTC")
    if record.get("version"):
        bits.append(f"batchlab {record['version']}")
    return f'<p class="meta">{h.esc(" · ".join(bits))}</p>'


def _settings_block(settings: dict, runs: list) -> str:
    rows = [(key, ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
            for key, value in settings.items()]
    body = (h.table(["setting", "value"], rows, caption="Study settings (defaults, --quick size and overrides applied)")
            if rows else '<p class="meta">No study settings recorded.</p>')
    if runs:
        body += settings_details(runs)
    return f'<details class="settings"><summary>Resolved settings</summary>{body}</details>'
