"""The page's CSS and script, inlined into every report (no CDN, no network).

Both live as package data next to this module, ``static/report.css`` and ``static/report.js``
(``pyproject.toml`` lists them under ``[tool.setuptools.package-data]`` so that wheels carry
them), and are read once, at import, with ``importlib.resources``.

The script draws each interactive learning-curve chart (``<figure class="chart">``) from the
JSON next to it: x axis epochs / updates / samples seen, metric, log-x, series toggles, and
values on hover or touch. ``#x=samples`` (or ``epoch``, ``updates``) and ``m=test_loss`` in the
URL's fragment choose the starting view, e.g. ``index.html#x=samples&m=test_loss``. For
checks in a headless browser it writes ``data-rendered="WxH"`` on every figure,
``data-ready`` on the body when done and ``data-js-errors`` if anything threw.
"""

from importlib.resources import files


def _static(name: str) -> str:
    return (files("batchlab.report") / "static" / name).read_text(encoding="utf-8")


STYLE = _static("report.css")
SCRIPT = _static("report.js")
