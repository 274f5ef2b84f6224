"""Study figures kept as SVG by what they were drawn from, so that a report does not draw
again what ``batchlab study`` (or an earlier report) has just drawn.

A study's figure is a function of the code that draws it and of its inputs: the study's
tables and settings. Its key is a digest of batchlab's source, matplotlib's version, the
study and figure names, every table's exact contents and the settings. The SVG is written
with fixed ids and no date (:func:`svg_text`), so a recalled figure is byte for byte the one
the report would draw (``tests/test_report.py`` checks it). Kept in the cache folder
(``cachedir.py``; ``BATCHLAB_CACHE_DIR=off`` keeps nothing) until unused for ``KEEP_DAYS``;
a miss, or a file that cannot be read, only means drawing again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import matplotlib
import numpy as np
import pandas as pd

from batchlab.cachedir import cache_dir, files_digest, write_whole

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HASH_SALT = "batchlab-report"  # matplotlib's otherwise random clip-path and marker ids
KEEP_DAYS = 14


def svg_text(fig: "Figure") -> str:
    """``fig`` as an SVG document that is the same whenever the same figure is drawn."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": HASH_SALT}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def figure_key(study: str, figure: str, tables: Mapping[str, pd.DataFrame], settings: Mapping,
               quick: bool = False) -> str | None:
    """The key of figure ``figure`` of ``study`` drawn from ``tables`` and ``settings`` (at quick
    size: labelled so); None where an input has no exact digest (the figure is then drawn
    every time)."""
    digest = hashlib.sha256(_code().encode())
    try:
        digest.update(json.dumps([study, figure, settings, bool(quick)], sort_keys=True, default=repr).encode())
        for name in sorted(tables):
            _digest_table(digest, name, tables[name])
    except (TypeError, ValueError):
        return None
    return digest.hexdigest()


def _digest_table(digest, name: str, table: pd.DataFrame) -> None:
    digest.update(repr((name, table.shape, [str(c) for c in table.columns], [str(t) for t in table.dtypes])).encode())
    for values in [table.index.to_numpy()] + [table.iloc[:, i].to_numpy() for i in range(table.shape[1])]:
        if values.dtype == object:
            digest.update(repr(values.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(values).tobytes())


def recall(key: str | None) -> str | None:
    """The SVG kept under ``key``, or None (also for a file that is not a whole SVG document)."""
    path = _path(key)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
        os.utime(path)  # in use: not to be removed
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.startswith("<?xml") and text.rstrip().endswith("</svg>") else None


def remember(key: str | None, svg: str) -> None:
    """Keep ``svg`` under ``key`` (nothing where caching is off or the key is None)."""
    path = _path(key)
    if path is not None:
        _prune(path.parent)
        write_whole(path, svg.encode("utf-8"))


def _path(key: str | None) -> Path | None:
    root = cache_dir()
    return None if root is None or key is None else root / "figures" / f"{key}.svg"


@lru_cache(maxsize=1)
def _code() -> str:
    """What else a figure depends on: the code that draws it and matplotlib's version."""
    package = Path(__file__).resolve().parents[1]
    return files_digest(package.rglob("*.py")) + matplotlib.__version__


@lru_cache(maxsize=None)
def _prune(folder: Path) -> None:
    """Remove figures unused for ``KEEP_DAYS`` (once per process and folder)."""
    try:
        for path in folder.glob("*.svg"):
            if time.time() - path.stat().st_mtime > KEEP_DAYS * 86400:
                path.unlink(missing_ok=True)
    except OSError:
        pass
