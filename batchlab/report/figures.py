"""Matplotlib figures as inline SVG that is the same on every build and safe to put many of on one page.

A saved SVG carries an XML prolog, a DOCTYPE that names an http URL, a metadata block, ids
that repeat across figures (``figure_1``, glyph ids such as ``DejaVuSans-14`` that mean a
different glyph in each figure) and a ``<style>`` whose ``*`` rule would apply to the whole
page. Each is removed or rewritten here; ids get a per-figure prefix. Figures are saved with
fixed ids and no date (``plots.memo.svg_text``), so rebuilding from the same store gives the
same bytes, and a study's figure kept when ``batchlab study`` drew it is used as it is.
"""

from __future__ import annotations

import re
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402

from batchlab.plots import memo  # noqa: E402

MIN_PX = 560

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_STYLE = re.compile(r"\s*<style[^>]*>.*?</style>", re.S)
_SIZE = re.compile(r'<svg\b([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"')
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def draw_svg(draw: Callable[[], "plt.Figure"], prefix: str, label: str, key: str | None = None) -> str:
    """Call ``draw`` (which returns a matplotlib Figure) and return it as inline SVG markup.

    ``prefix`` makes the figure's ids unique on the page; ``label`` is its accessible name;
    ``key`` (``plots.memo.figure_key``) names what it is drawn from: a figure kept under it is
    used instead of drawing, and a figure drawn is kept.
    """
    text = memo.recall(key)
    if text is None:
        fig = draw()
        try:
            text = memo.svg_text(fig)
        finally:
            plt.close(fig)
        memo.remember(key, text)
    return inline_svg(text, prefix, label)


def inline_svg(text: str, prefix: str, label: str) -> str:
    """A saved SVG document rewritten for inlining (see the module docstring)."""
    from html import escape

    text = _PROLOG.sub("", text, count=1)
    text = _METADATA.sub("", text, count=1)
    text = _STYLE.sub("", text)
    text = _ID.sub(lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = _REF.sub(lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)

    def size(match: re.Match) -> str:
        width = float(match.group(2)) * 4 / 3  # pt -> CSS px
        # The column's width, the height following the viewBox; small figures may grow to
        # MIN_PX, and on a phone a wide one stays MIN_PX wide and scrolls sideways in its frame
        # rather than shrinking its text out of legibility.
        return (f'<svg{match.group(1)} class="mpl" role="img" aria-label="{escape(label)}" '
                f'style="max-width:{max(width, MIN_PX):.0f}px' + (f';min-width:{MIN_PX}px"' if width > MIN_PX else '"'))

    text = _SIZE.sub(size, text, count=1)
    return text.strip()
