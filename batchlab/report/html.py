"""Small HTML building blocks: escaping, numbers with units, tables, badges, the page shell."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from html import escape
from typing import Any, Iterable, Sequence

from batchlab.report.assets import SCRIPT, STYLE


@dataclass
class Section:
    """One part of the report: an anchor, a title, its body and a card for the overview."""

    anchor: str
    kind: str  # study | sweep | runs
    title: str
    body: str
    card: str
    figures: int = 0  # static (matplotlib) figures in the body
    charts: int = 0  # interactive charts in the body
    problems: list[str] = field(default_factory=list)


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def slug(text: str) -> str:
    """An id-safe form of ``text`` (lower case, [a-z0-9-])."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fmt_count(value: Any, unit: str = "") -> str:
    """12,345 samples; '—' for missing values."""
    if missing(value):
        return "—"
    return f"{float(value):,.0f}" + (f" {unit}" if unit else "")


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage: 0.9312 -> '93.1 %'."""
    if missing(value):
        return "—"
    return f"{100 * float(value):.{digits}f} %"


def fmt_num(value: Any, digits: int = 3, unit: str = "") -> str:
    if missing(value):
        return "—"
    return f"{float(value):.{digits}g}" + (f" {unit}" if unit else "")


def fmt_seconds(value: Any) -> str:
    if missing(value):
        return "—"
    value = float(value)
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s" if value < 600 else f"{value / 60:,.1f} min"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None,
          numeric: Sequence[bool] | None = None) -> str:
    """A table inside a horizontally scrolling wrapper (cells are escaped; pass text)."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f'<th scope="col"{" class=num" if n else ""}>{esc(h)}</th>' for h, n in zip(headers, numeric))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if n else ""}>{esc(c)}</td>' for c, n in zip(row, numeric))
                   + "</tr>" for row in rows)
    cap = f'<p class="caption">{esc(caption)}</p>' if caption else ""  # outside the scroller: always readable
    return (f'{cap}<div class="table-wrap" tabindex="0"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def section_start(anchor: str, kind: str, title: str) -> str:
    """Opens a report section (close it with ``</section>``): its kind above its title."""
    return (f'<section id="{esc(anchor)}" aria-labelledby="{esc(anchor)}-title"><h2 id="{esc(anchor)}-title">'
            f'<span class="section-kind">{esc(kind)}</span>{esc(title)}'
            '<a class="top-link" href="#top">back to top</a></h2>')


def badge(verdict: str) -> str:
    kind = verdict if verdict in ("agrees", "disagrees", "inconclusive") else "other"
    return f'<span class="badge badge-{kind}">{esc(verdict)}</span>'


def figure(svg: str, caption: str, fig_id: str) -> str:
    return f'<figure class="fig" id="{esc(fig_id)}">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def json_script(data: Any, element_id: str) -> str:
    """Data for the page's script, as inline JSON ('</' escaped so it cannot close the tag)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def chart(chart_id: str, title: str, data: dict) -> str:
    """An interactive learning-curve chart (drawn by the page's script from inline JSON)."""
    if not data.get("series"):
        return ""
    return (f'<figure class="chart" id="{esc(chart_id)}" data-chart="{esc(chart_id)}-data" aria-label="{esc(title)}">'
            f'<figcaption class="chart-title">{esc(title)}</figcaption>'
            f'<noscript>This chart needs JavaScript; the static figures show the same curves.</noscript>'
            f'{json_script(data, chart_id + "-data")}</figure>')


def page(title: str, body: str, nav: str = "") -> str:
    """The whole document: inline CSS and script, no external resource."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>\n{STYLE}</style></head>"
            f"<body>{nav}<main id=\"top\">{body}</main><script>\n{SCRIPT}</script></body></html>\n")
