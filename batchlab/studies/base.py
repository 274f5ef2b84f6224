"""What a study is: a declaration, run by one runner (``studies/runner.py``).

A :class:`Study` names the question and its source, its settings (faithful defaults and a
``quick`` size), the runs (``grids``: keyword arguments of :func:`batchlab.train`, one
:class:`Grid` per group of runs), what is measured on saved parameters (``checkpoints``),
the analysis that turns the stored runs into tables, the figures drawn from those tables
and the findings computed from them. Nothing in a study trains, stores or writes files
itself: the runner does that, the same way for every study.

A study module is a declaration: its settings, grids, checkpoint instruments (the
measurement on saved parameters, which runs training code, lives there too) and figures.
The analysis, findings and notes it names live in ``analysis/<study>.py`` and read
DataFrames only (:class:`~batchlab.analysis.study_data.StudyData`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from batchlab.analysis.study_data import Settings, StudyData, Tables
from batchlab.instruments.checkpoint import CheckpointInstrument
from batchlab.errors import BatchlabError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

    from batchlab.analysis.findings import Finding

__all__ = ["Grid", "FigureSpec", "Study", "StudyData", "Settings", "Tables", "coerce"]


@dataclass(frozen=True)
class Grid:
    """A group of runs: ``train`` holds keyword arguments of :func:`batchlab.train` (lists
    make a grid: batch sizes x lrs x seeds); ``label`` names the group in tables and figures."""

    label: str
    train: dict[str, Any]
    # Train each run as a cohort of its own (timing studies need one clock per run); by
    # default runs of all grids that share data and model are trained together.
    alone: bool = False


@dataclass(frozen=True)
class FigureSpec:
    """A figure drawn from the analysis tables; ``table`` is written beside it as CSV."""

    name: str
    draw: Callable[[Tables, Settings], "plt.Figure"]
    table: str


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    source: str
    defaults: Settings
    grids: Callable[[Settings], list[Grid]]
    analyse: Callable[["StudyData", Settings], Tables]
    figures: tuple[FigureSpec, ...]
    findings: Callable[[Tables, Settings], list["Finding"]]
    quick: Settings = field(default_factory=dict)  # overrides of ``defaults`` at --quick size
    checkpoints: Callable[[Settings], list[CheckpointInstrument]] = lambda settings: []
    notes: Callable[[Tables, Settings], list[str]] = lambda tables, settings: []  # computed explanations
    steps: bool = False  # whether the analysis reads per-step records (they can be large)
    # Inclusive bounds of the study's own numeric settings (each element of a list), checked
    # with the others before anything trains; a bound may name another setting (last_epochs
    # <= epochs). Training settings are checked by the grids they go into; "target" is parsed.
    limits: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # Wall time of a fresh command on the 2-core CPU (faithful, quick), measured (benchmarks/bench_studies.py).
    minutes: tuple[float, float] = (1.0, 0.2)

    def settings(self, quick: bool = False, overrides: dict[str, Any] | None = None) -> Settings:
        """Defaults, then the quick size, then the user's overrides (each checked and typed
        like the default it replaces)."""
        settings = dict(self.defaults)
        if quick:
            settings.update(self.quick)
        for key, value in (overrides or {}).items():
            if key not in settings:
                raise BatchlabError(f"study {self.name!r} has no setting {key!r}; "
                                    f"its settings: {', '.join(sorted(settings))}")
            settings[key] = coerce(value, settings[key], key)
        for key, value in settings.items():
            check_setting(self.name, key, value, self.limits.get(key), settings)
        return settings


def check_setting(study: str, key: str, value: Any, limits: tuple[Any, Any] | None, settings: Settings) -> None:
    """Numbers finite and within ``limits`` (inclusive; a bound may name another setting); a
    target parsed. One line naming the study and the setting otherwise."""
    import math

    from batchlab.targets import parse_target

    if key == "target":
        parse_target(str(value))
    low, high = (settings.get(b, b) if isinstance(b, str) else b for b in (limits or (None, None)))
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if not math.isfinite(item) or (low is not None and item < low) or (high is not None and item > high):
            bounds = f"within [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            raise BatchlabError(f"study {study!r}: {key}={item!r} must be finite and {bounds}")


def coerce(value: Any, default: Any, key: str) -> Any:
    """A ``--set key=value`` text as the type of the setting's default."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, (tuple, list)):
            return tuple(_scalar(p.strip()) for p in text.split(",") if p.strip())
    except ValueError:
        raise BatchlabError(f"setting {key}={text!r} must be a {type(default).__name__}") from None
    return text


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
