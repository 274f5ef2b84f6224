"""A finished run as plain data: its config, status and recorded series.

It sits below the engine and the store in the import graph, so reading a store needs
neither JAX nor the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchlab.config import RunConfig


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

    @property
    def run_id(self) -> str:
        return self.config.run_id
