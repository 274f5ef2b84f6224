"""Runs written by another batchlab version: which of them this version can read.

What "newer" means here: a stored run is *newer* when its config holds a setting this version
does not know (a field ``RunConfig`` lacks, e.g. ``optimizer.new_knob``), so that this version
cannot say what the run was. The version string stored with the run only names the writer in
messages ("a newer batchlab (v0.4.0)" when it is greater than ours, "another batchlab" when not,
e.g. a development build): a run of a greater version whose settings are all known is read as
any other run.

One exception follows from how ids are made (``config.identity``): a setting at its default is
left out of a run's id. When the id of the known settings alone is the stored id, the unknown
settings did not enter it, i.e. they hold their defaults, which by batchlab's rule reproduce the
behaviour of versions without them; such a run is the run this version would make from the
known settings, and is read as that. Every other newer run is skipped with a word by the
commands that read runs; it is never counted as damaged and never blocks the other runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from batchlab.config import RunConfig, run_config_from_dict
from batchlab.version import __version__

SHOWN_IDS = 10  # run ids a message lists before "and N more"


@dataclass(frozen=True)
class NewerRun:
    """A stored run this version cannot read: its id, the version that wrote it and the
    settings of its config that this version does not know."""

    run_id: str
    version: str
    settings: tuple[str, ...]


class Newer(Exception):
    """Raised while decoding a stored run that is newer (see the module's docstring)."""

    def __init__(self, run: NewerRun):
        super().__init__(run.run_id)
        self.run = run


def release(version: str) -> tuple[int, ...] | None:
    """``"0.4.0.dev1"`` -> ``(0, 4, 0)``: the numeric release part, None when there is none."""
    match = re.match(r"v?(\d+(?:\.\d+)*)", str(version).strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def is_newer(version: str) -> bool:
    """Whether ``version`` is a greater release than this batchlab's."""
    theirs, ours = release(version), release(__version__)
    return theirs is not None and ours is not None and theirs > ours


def stored_config(d: Any, run_id: str, version: str) -> RunConfig:
    """The config of a stored run from its JSON dict; :class:`Newer` when it holds settings
    this version does not know and they enter its id. Other faults raise what
    :func:`~batchlab.config.run_config_from_dict` raises (the caller calls them damage)."""
    unknown: list[str] = []
    cfg = run_config_from_dict(d, unknown)
    if unknown and cfg.run_id != run_id:
        raise Newer(NewerRun(run_id, str(version), tuple(unknown)))
    return cfg


def writer(runs: Sequence[NewerRun]) -> str:
    """``"a newer batchlab"`` when every run's version is greater than ours, else ``"another batchlab"``."""
    return "a newer batchlab" if all(is_newer(r.version) for r in runs) else "another batchlab"


def describe(runs: Sequence[NewerRun]) -> str:
    """One phrase for skipped newer runs: how many, who wrote them, the settings this version
    lacks and their ids, e.g. ``1 run written by a newer batchlab (v0.4.0) uses settings this
    batchlab (0.3.0) does not know (optimizer.new_knob): 163d73d6``."""
    versions = sorted({r.version for r in runs}, key=lambda v: (release(v) or (), v))
    settings = sorted({s for r in runs for s in r.settings})
    ids = [r.run_id[:8] for r in runs]
    shown = ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")
    many = len(runs) != 1
    return (f"{len(runs)} run{'s' if many else ''} written by {writer(runs)} ({', '.join('v' + v for v in versions)}) "
            f"use{'' if many else 's'} settings this batchlab ({__version__}) does not know "
            f"({', '.join(settings)}): {shown}")
