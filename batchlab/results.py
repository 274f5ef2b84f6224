"""A finished run as plain data: its config, status and recorded series.

It sits below the engine and the store in the import graph, so reading a store needs
neither JAX nor the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchlab.config import RunConfig

MONITORED = "monitored"  # the kind of a run recorded in a user's own training loop (batchlab.monitor)
# A monitored run's settings that fill a field of its config (``monitor/described.py``); the
# others are free key/values, shown as columns of their own.
DESCRIBED_SETTINGS = ("batch_size", "lr", "momentum", "weight_decay", "optimizer", "epochs", "data", "model", "seed")


@dataclass(frozen=True)
class Monitored:
    """What makes a run *monitored*: it was trained by the user's own loop and only measured by
    batchlab (``batchlab.monitor``), so its config describes it but cannot reproduce it. Its id
    is drawn once per monitor (two sessions of the same loop are two runs); ``settings`` are the
    key/values the user gave, as stored (numbers, text, booleans)."""

    run_id: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """One finished run: its config, status and recorded series (numpy arrays)."""

    config: RunConfig
    status: str  # "finished" | "early_stopped" | "diverged"
    history: dict[str, np.ndarray]  # per epoch, epoch 0 included
    steps: dict[str, np.ndarray]  # per optimizer update
    best_epoch: int
    diverged_step: int | None = None
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    params: Any = field(default=None, repr=False)  # final (or restored best) parameters
    version: str | None = None  # batchlab version that produced it (set when read from a store)
    checkpoints: dict[int, Any] = field(default_factory=dict, repr=False)  # epoch -> parameters, when asked
    monitored: Monitored | None = None  # set for a run measured in the user's own loop

    @property
    def run_id(self) -> str:
        return self.monitored.run_id if self.monitored is not None else self.config.run_id

    @property
    def kind(self) -> str:
        """``"monitored"`` for a run of the user's own loop, ``"trained"`` for one batchlab trained."""
        return MONITORED if self.monitored is not None else "trained"
