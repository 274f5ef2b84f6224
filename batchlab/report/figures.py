"""Matplotlib figures as inline SVG that is the same on every build and safe to put many of on one page.

A saved SVG carries an XML prolog, a DOCTYPE that names an http URL, a metadata block, ids
that repeat across figures (``figure_1``, glyph ids such as ``DejaVuSans-14`` that mean a
different glyph in each figure) and a ``<style>`` whose ``*`` rule would apply to the whole
page. Each is removed or rewritten here; ids get a per-figure prefix. ``svg.hashsalt`` fixes
matplotlib's otherwise random clip-path and marker ids, and ``Date: None`` drops the date, so
rebuilding from the same store gives the same bytes.
"""

from __future__ import annotations

import io
import re
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; no display is assumed
import matplotlib.pyplot as plt  # noqa: E402

HASH_SALT = "batchlab-report"
MIN_PX = 560

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_STYLE = re.compile(r"\s*<style[^>]*>.*?</style>", re.S)
_SIZE = re.compile(r'<svg\b([^>]*?)\swidth="([\d.]+)pt"\s+height="([\d.]+)pt"')
_ID = re.compile(r'\bid="([^"]+)"')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def draw_svg(draw: Callable[[], "plt.Figure"], prefix: str, label: str) -> str:
    """Call ``draw`` (which returns a matplotlib Figure) and return it as inline SVG markup.

    ``prefix`` makes the figure's ids unique on the page; ``label`` is its accessible name.
    """
    with plt.rc_context({"svg.hashsalt": HASH_SALT}):
        fig = draw()
        try:
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return inline_svg(buf.getvalue(), prefix, label)


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
