"""What a study's analysis reads: its stored runs as DataFrames.

The runner (``studies/runner.py``) and the report fill a :class:`StudyData` from the store
(``studies/outputs.py``, never from the training process); every ``analyse`` function in
``analysis/`` turns one into named tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

Settings = dict[str, Any]  # a study's resolved settings: its defaults, quick size and overrides
Tables = dict[str, "pd.DataFrame"]  # an analysis' named tables


@dataclass
class StudyData:
    """The stored runs of a study, read back from the store (never from the training process)."""

    history: "pd.DataFrame"  # per epoch; a ``group`` column holds each run's grid label
    summary: "pd.DataFrame"  # one row per run
    steps: "pd.DataFrame"  # per step (empty unless the study asks for steps)
    measurements: "pd.DataFrame"  # checkpoint instruments' records (run_id, instrument, epoch, ...)
    runs: list  # the RunResults (configs, statuses)
