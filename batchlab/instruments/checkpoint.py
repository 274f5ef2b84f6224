"""Checkpoint instruments: measurements on the parameters a run saved at given epochs (0 is
before training), between epochs rather than inside the step; the study runner trains the runs
with those checkpoints kept and stores what each instrument returns (``studies/runner.py``).
The measurements themselves: ``gradients.py`` (per-sample gradient statistics), ``hessian.py``
(sharpness), and the studies' own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from batchlab.config import RunConfig

if TYPE_CHECKING:
    from batchlab.data import Dataset
    from batchlab.models import Model


@dataclass
class Checkpoint:
    """What one checkpoint instrument sees: a run, an epoch and the parameters saved there."""

    config: RunConfig
    epoch: int
    params: Any
    dataset: "Dataset"
    model: "Model"
    settings: dict[str, Any]  # the study's settings


@dataclass(frozen=True)
class CheckpointInstrument:
    """A measurement on saved parameters: ``measure`` returns the records stored under
    ``name`` for each of ``epochs`` (of the runs of the grids labelled ``grids``; all if None)."""

    name: str
    epochs: tuple[int, ...]
    measure: Callable[[Checkpoint], list[dict]]
    grids: tuple[str, ...] | None = None

    def applies_to(self, label: str) -> bool:
        return self.grids is None or label in self.grids
