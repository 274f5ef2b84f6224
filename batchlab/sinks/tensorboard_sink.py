"""TensorBoard: event files written with ``tensorboardX``'s ``SummaryWriter`` (it needs no
TensorFlow and no torch), one folder per run, ``<folder>/<name>-<id8>``; view them with
``tensorboard --logdir <folder>``. Each value is a scalar tagged with its batchlab name at its
update number; the settings are one text entry (``batchlab/settings``). TensorBoard keeps
scalars as float32 (the ``simple_value`` of its protocol), so it shows the store's values
rounded to about 7 significant digits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from batchlab.errors import BatchlabError
from batchlab.sinks import Row, SinkRun, needs

DEFAULT_FOLDER = "runs"  # TensorBoard's and torch's usual logdir


class TensorBoardSink:
    """Scalars to event files under ``folder`` (one subfolder per run)."""

    def __init__(self, folder: str | Path = DEFAULT_FOLDER):
        self.folder = Path(folder)
        self.writer = None

    def open(self, run: SinkRun) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise needs("tensorboardX", "tensorboard") from None
        self.path = self.folder / run.label
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.path))
        except OSError as exc:
            raise BatchlabError(f"cannot write TensorBoard files in {self.path} ({exc.strerror or exc})") from None
        settings = {"run_id": run.run_id, "name": run.name, "kind": run.kind, **run.settings}
        self.writer.add_text("batchlab/settings", json.dumps(settings, sort_keys=True, default=str))

    def write(self, rows: Sequence[Row]) -> None:
        for step, wall, values in rows:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step, walltime=wall)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
