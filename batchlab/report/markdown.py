"""The little Markdown that studies' notes are written in, as HTML.

A study's notes (``Study.notes``) go into its ``findings.md`` as they are and into the report
through :func:`markdown_html`: paragraphs, ``- `` bullet lists (consecutive bulleted notes make
one list), pipe tables (a header row, a ``|---|`` row, body rows; ``---:`` aligns a column
right), ``code`` and **bold**. Nothing else is read as markup: notes are full of formulas
(``Theta*``, ``B_crit``, ``|G|^2``), so single ``*`` and ``_`` stay as they are.
"""

from __future__ import annotations

import re
from typing import Iterable

from batchlab.report.html import esc

_CODE = re.compile(r"``(.+?)``|`([^`]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_BULLET = re.compile(r"^[-*] ")


def markdown_html(notes: Iterable[str]) -> str:
    """``notes`` (each one or more Markdown blocks) as HTML: <p>, <ul>/<li> and <table> elements."""
    parts: list[str] = []
    items: list[str] = []  # the open list's items, closed by any other block
    for lines in _blocks(notes):
        if _kind(lines[0]) == "bullet":
            items += _items(lines)
            continue
        if items:
            parts.append(_list(items))
            items = []
        parts.append(_table(lines) if _is_table(lines) else f"<p>{inline(' '.join(lines))}</p>")
    if items:
        parts.append(_list(items))
    return "".join(parts)


def _blocks(notes: Iterable[str]) -> list[list[str]]:
    """The lines of each block: blank lines separate blocks, as do the end of a note and a
    change between text, bullets and table rows (an indented line continues a bullet)."""
    blocks: list[list[str]] = []
    for note in notes:
        current: list[str] = []
        for line in str(note).splitlines() + [""]:
            line = line.rstrip()
            continues = current and (_kind(line) == _kind(current[0]) or
                                     _kind(current[0]) == "bullet" and line.startswith((" ", "\t")))
            if line.strip() and continues:
                current.append(line)
                continue
            if current:
                blocks.append(current)
            current = [line] if line.strip() else []
    return blocks


def _kind(line: str) -> str:
    if _BULLET.match(line):
        return "bullet"
    return "table" if line.lstrip().startswith("|") else "text"


def _items(lines: list[str]) -> list[str]:
    """The list items of a bulleted block (an indented line continues the item above it)."""
    items: list[str] = []
    for line in lines:
        if _BULLET.match(line):
            items.append(line[2:].strip())
        else:
            items[-1] += " " + line.strip()
    return items


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>"


def _is_table(lines: list[str]) -> bool:
    return len(lines) >= 2 and all(line.lstrip().startswith("|") for line in lines) and bool(
        _SEPARATOR.match(lines[1].strip()))


def _cells(line: str) -> list[str]:
    line = line.strip()
    return [cell.strip() for cell in line.strip("|").split("|")]


def _table(lines: list[str]) -> str:
    """A pipe table in the report's scrolling table frame (``html.table``'s markup)."""
    head, rule, body = _cells(lines[0]), _cells(lines[1]), [_cells(line) for line in lines[2:]]
    right = [cell.endswith(":") and not cell.startswith(":") for cell in rule]

    def cell(tag: str, text: str, k: int) -> str:
        scope = ' scope="col"' if tag == "th" else ""
        return f'<{tag}{scope}{" class=num" if k < len(right) and right[k] else ""}>{inline(text)}</{tag}>'

    header = "".join(cell("th", text, k) for k, text in enumerate(head))
    rows = "".join("<tr>" + "".join(cell("td", text, k) for k, text in enumerate(row)) + "</tr>" for row in body)
    return (f'<div class="table-wrap" tabindex="0"><table><thead><tr>{header}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def inline(text: str) -> str:
    """``text`` escaped, with ``code`` and **bold** as HTML."""
    out, last = [], 0
    for match in _CODE.finditer(text):  # code first: nothing inside it is markup
        out.append(_bold(esc(text[last:match.start()])))
        out.append(f"<code>{esc(match.group(1) or match.group(2))}</code>")
        last = match.end()
    out.append(_bold(esc(text[last:])))
    return "".join(out)


def _bold(escaped: str) -> str:
    return _BOLD.sub(r"<b>\1</b>", escaped)
