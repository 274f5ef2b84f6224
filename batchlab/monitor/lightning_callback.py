"""``LightningCallback``: :class:`~batchlab.monitor.TorchMonitor` inside a Lightning ``Trainer``.

Lightning runs the loop, so the callback makes the monitor's calls at Lightning's hooks:

- ``on_train_batch_start``: note the batch's rows (the length of the first tensor in the batch,
  or ``batch_size(batch)`` when given);
- ``on_after_backward``: with ``accumulate_grad_batches`` = k >= 2, each micro-batch's
  ``update(micro_batch=True)`` (Lightning divides each micro-batch's loss by k, so equal
  micro-batches accumulate the batch's mean gradient, as the monitor expects);
- ``on_before_optimizer_step``: the update's ``update()``, after the last backward and before
  the optimizer moves the weights (Lightning calls it inside ``optimizer.step(closure)``,
  after the closure and before the step);
- ``on_fit_end`` (or ``on_exception``): ``close()``.

Automatic optimization with one optimizer (what ``on_before_optimizer_step`` marks).
The optimizer's class, lr, momentum and weight decay join the run's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    from pytorch_lightning import Callback

from batchlab.errors import BatchlabError
from batchlab.monitor.torch_monitor import TorchMonitor


class LightningCallback(Callback):
    """Record a Lightning fit as a monitored run (``TorchMonitor``'s keywords apply:
    ``instruments``, ``every``, ``flush_every``, ``log_to``, settings)."""

    def __init__(self, db: str | Path | None = "batchlab.db", name: str = "lightning-run", *,
                 batch_size: Callable[[Any], int] | None = None, **monitor_kwargs: Any):
        self.db, self.name, self.batch_size, self.kwargs = db, name, batch_size, monitor_kwargs
        self.monitor: TorchMonitor | None = None
        self.rows = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        settings = dict(self.kwargs.pop("settings", None) or {})
        if trainer.optimizers:
            settings.setdefault("optimizer", trainer.optimizers[0])
        settings.setdefault("accumulate_grad_batches", trainer.accumulate_grad_batches)
        self.monitor = TorchMonitor(pl_module, self.db, self.name, settings=settings, **self.kwargs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rows = self.batch_size(batch) if self.batch_size is not None else _rows_of(batch)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.accumulate_grad_batches > 1:
            self.monitor.update(batch_size=self.rows, micro_batch=True)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.monitor.update(batch_size=None if trainer.accumulate_grad_batches > 1 else self.rows)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.close()

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()

    @property
    def run_id(self) -> str:
        return self.monitor.run_id


def _rows_of(batch: Any) -> int:
    """Rows of a batch: the length of its first tensor (itself, or in a tuple, list or dict)."""
    items = list(batch.values()) if isinstance(batch, dict) else [batch]
    while items:
        item = items.pop(0)
        if hasattr(item, "shape") and len(item.shape) >= 1:
            return int(item.shape[0])
        if isinstance(item, (tuple, list)):
            items[:0] = list(item)
        elif isinstance(item, dict):
            items[:0] = list(item.values())
    raise BatchlabError("LightningCallback cannot tell the batch's rows: pass batch_size=lambda batch: ...")
