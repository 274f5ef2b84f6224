"""Weights & Biases: one W&B run per batchlab run, offline by default (``mode="offline"``:
the run is a folder ``<folder>/wandb/offline-run-<time>-<id>`` holding a ``.wandb`` log that
``wandb sync`` uploads later; nothing leaves the machine). Values are logged with
``run.log(values, step=update)``; settings are the run's config; the W&B run id is the batchlab
id. A run of its own (``wandb.init(..., reinit="create_new")``), so a W&B run the user's script
has open is left alone. Pass ``mode="online"`` to send it as the run goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from batchlab.errors import BatchlabError
from batchlab.sinks import Row, SinkRun, needs

PROJECT = "batchlab"


class WandbSink:
    """``run.log`` to a W&B run in ``folder`` (project ``project``, offline by default)."""

    def __init__(self, folder: str | Path = ".", project: str = PROJECT, mode: str = "offline"):
        self.folder, self.project, self.mode = Path(folder), project, mode
        self.run = None

    def open(self, run: SinkRun) -> None:
        try:
            import wandb
        except ImportError:
            raise needs("wandb", "wandb") from None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=self.project, dir=str(self.folder), id=run.run_id, name=run.label,
                                  config={"batchlab_kind": run.kind, **run.settings}, mode=self.mode,
                                  reinit="create_new", settings=wandb.Settings(console="off", x_disable_stats=True,
                                                                               silent=True))
        except Exception as exc:
            raise BatchlabError(f"W&B ({self.mode}, {self.folder}): {str(exc).strip().splitlines()[0]}") from None

    def write(self, rows: Sequence[Row]) -> None:
        for step, _, values in rows:
            if values:
                self.run.log(values, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
