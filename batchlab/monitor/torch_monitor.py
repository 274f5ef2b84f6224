"""``TorchMonitor``: batchlab's per-step instruments inside the user's own PyTorch loop.

The contract (what a loop adds)::

    mon = TorchMonitor(model, db="batchlab.db", name="my-run", settings=dict(lr=0.1))
    for x, y in loader:
        loss = loss_fn(model(x), y)
        loss.backward()
        mon.update(batch_size=len(x))   # after backward, before optimizer.step(): reads .grad
        optimizer.step(); optimizer.zero_grad()
    mon.close()

Gradient accumulation over k micro-batches: call ``mon.update(batch_size=len(xb),
micro_batch=True)`` after each micro-batch's ``backward()``, then ``mon.update()`` once before
``optimizer.step()`` (its batch is the micro-batches together). Each micro-batch's loss must be
scaled so that the accumulated ``.grad`` is the batch's mean gradient (its mean loss times
``len(xb) / B``; with equal micro-batches, divided by k), which is what the step should use
anyway. The first micro-batch is then the small batch and the accumulated batch the big one of
the two-batch noise estimate (``instruments/step/noise_scale.py``), as batchlab's engine uses
the first half of a batch and the batch.

Under DDP (``torch.distributed`` initialized, the model wrapped in ``DistributedDataParallel``)
the rank's own gradient is the small batch and the all-reduced one the big (W x the rank's
batch; ``distributed.py``); every rank measures, only rank 0 writes the store.

When: the instruments measure update t from (g_t, theta_t, theta_{t+1}), but at ``update()``
the step has not happened yet. So ``update()`` keeps a copy of g_t and theta_t and the
measurement of update t is made at the next ``update()`` (or at ``close()``), when the
parameters are theta_{t+1}: the values are the engine's, one call late. Memory: two copies of
the trained parameters, only at measured updates (``every``).

The instruments are the engine's own objects (``instruments/step/``), run through the torch
backend's array operations (``engine.torch_step.TorchOps``, one run), so a monitored run and a
batchlab run of the same model, batches and initial weights record the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from batchlab.engine.torch_ops import TorchOps
from batchlab.errors import BatchlabError
from batchlab.instruments import step_instruments
from batchlab.instruments.base import Step, measure, start_measures
from batchlab.monitor.choices import DEFAULT_INSTRUMENTS, FLUSH_EVERY, NOISE, instrument_spec
from batchlab.monitor.described import describe, new_run_id, plain_settings
from batchlab.monitor.distributed import RankGradients, is_ddp, process_group_size
from batchlab.monitor.recorder import Recorder

class TorchMonitor:
    """Measure a PyTorch model's updates in the user's loop and record them as a monitored run.

    Args:
        model: the ``nn.Module`` being trained (or its ``DistributedDataParallel`` wrapper);
            the parameters that require grad are measured, all flattened together.
        db: the batchlab store to write (created if missing); None keeps the records in
            memory (:meth:`steps`).
        name: the run's name (a label: each monitor is a new run with its own id).
        instruments: names, presets or instrument objects (``batchlab.instruments``); None:
            grad_norm, update_norm, dist_init, and noise_scale when the first update has
            micro-batches or several DDP ranks.
        every: measure every k-th update only (the others cost nothing and record nothing).
        flush_every: updates between writes to the store.
        settings: the run's settings as key/values (``batch_size``, ``lr``, ``momentum``,
            ``optimizer`` as a name or the optimizer object, ``data``, ``model``, anything else);
            keyword arguments are added to them.
        log_to: also send the recorded series to TensorBoard, MLflow or W&B (``"tensorboard"``,
            ``"mlflow:file:./mlruns"``, a sink object, or a list; ``batchlab/sinks/``), at each
            flush to the store; under DDP rank 0 only.
    """

    def __init__(self, model: torch.nn.Module, db: str | Path | None = "batchlab.db", name: str = "my-run", *,
                 instruments: Any = None, every: int = 1, flush_every: int = FLUSH_EVERY,
                 settings: dict[str, Any] | None = None, log_to: Any = None, **more_settings: Any):
        if not isinstance(model, torch.nn.Module):
            raise BatchlabError(f"TorchMonitor watches a torch.nn.Module, not {type(model).__name__}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise BatchlabError(f"{type(model).__name__} has no parameters that require grad: nothing to measure")
        self.default = instruments is None
        spec = instrument_spec(DEFAULT_INSTRUMENTS + (NOISE,) if self.default else instruments, every)
        self.instruments = step_instruments(spec)
        if any(ins.halves and ins.name != NOISE for ins in self.instruments):
            raise BatchlabError("a monitored loop gives the two-batch instruments noise_scale's split only")
        self.ops = TorchOps(1)
        self.measures = start_measures(self.instruments, [p.detach().clone() for p in self.params], self.ops)
        self.settings = plain_settings({**(settings or {}), **more_settings})
        self.rank, self.world = process_group_size()
        self.ranks = RankGradients(model) if self.world > 1 and is_ddp(model) else None
        self.model_name = type(model.module if is_ddp(model) else model).__name__
        self.name, self.run_id = str(name), new_run_id(str(name))
        self.count, self.samples = 0, 0
        self.pending: tuple | None = None  # (count, grad, params, halves, extra values) of a measured update
        self.micro: list[int] = []  # sizes of this update's micro-batches so far
        self.first_micro: list[torch.Tensor] | None = None  # accumulated .grad after the first micro-batch
        self.closed = False
        self.recorder = Recorder(db if self.rank == 0 else None, self.run_id, self._describe, flush_every)
        if log_to is not None and self.rank == 0:
            self.recorder.log_to(log_to, self.name, self.settings)

    # ------------------------------------------------------------------ the loop's calls

    def update(self, batch_size: int | None = None, *, micro_batch: bool = False, loss: Any = None) -> None:
        """Read the gradient of the update about to be made (after ``backward()``, before
        ``optimizer.step()``). ``batch_size``: rows of the batch (of this micro-batch with
        ``micro_batch=True``; under DDP, of this rank). ``loss``: the batch's mean loss, recorded
        as ``mb_loss``."""
        if self.closed:
            raise BatchlabError("update() after close(): make a new TorchMonitor for another run")
        self._finish_pending()
        if micro_batch:
            self._micro_batch(batch_size)
            return
        size = self._step_size(batch_size)
        grads = self._grads()
        self.count += 1
        ranks = self.ranks.take() if self.ranks is not None else None
        big = size * self.world  # the batch the all-reduced gradient is the mean of
        self.samples += big
        if self.count == 1:
            self._first_update(grads, ranks)
        if self._due(self.count):
            halves = self._halves(grads, size, ranks)
            values = {} if loss is None else {"mb_loss": loss.detach() if torch.is_tensor(loss) else float(loss)}
            copies = _copy(grads + self.params)  # one fused copy of g_t and theta_t
            n = len(grads)
            self.pending = (self.count, self.samples, copies[:n], copies[n:], halves, values)
        if self.ranks is not None:
            self.ranks.capture = self._due(self.count + 1)
        self.micro, self.first_micro = [], None
        self.recorder.count_update(big)

    def close(self) -> None:
        """Measure the last update (its parameters are theta_{t+1} now) and write the run."""
        if self.closed:
            return
        self.closed = True
        try:
            self._finish_pending()
        finally:
            self.recorder.close()

    def steps(self) -> dict[str, Any]:
        """The per-step records so far (NumPy arrays by name; the last update is measured at
        the next call or at close)."""
        return self.recorder.steps()

    def __enter__(self) -> "TorchMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ inside

    def _due(self, count: int) -> bool:
        return any(count % ins.every == 0 for ins in self.instruments)

    def _grads(self) -> list[torch.Tensor]:
        """The ``.grad`` of each measured parameter (zeros where one took no part, as the engine's
        ``materialize_grads``); an error when no parameter has one."""
        if all(p.grad is None for p in self.params):
            raise BatchlabError("update() found no gradient: call it after loss.backward() and before "
                                "optimizer.step() and zero_grad()")
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]

    def _micro_batch(self, batch_size: int | None) -> None:
        if batch_size is None:
            raise BatchlabError("update(micro_batch=True) needs batch_size: the rows of that micro-batch")
        self.micro.append(_rows(batch_size))
        if len(self.micro) == 1 and self._due(self.count + 1) and self.ranks is None:
            self.first_micro = _copy(self._grads())

    def _step_size(self, batch_size: int | None) -> int:
        """The update's batch (this rank's): the given size, or the micro-batches' total."""
        if self.micro:
            total = sum(self.micro)
            if batch_size is not None and _rows(batch_size) != total:
                raise BatchlabError(f"update(batch_size={batch_size}) does not match its micro-batches, "
                                    f"{' + '.join(map(str, self.micro))} = {total} rows")
            return total
        if batch_size is None:
            raise BatchlabError("update() needs batch_size: the rows of the batch behind this gradient")
        return _rows(batch_size)

    def _first_update(self, grads: list[torch.Tensor], ranks: list | None) -> None:
        """Checks that need one look at a real step, and the default instruments' last choice."""
        if float(self.ops.sq_norms([grads])[0]) == 0.0:
            raise BatchlabError("the gradient is zero everywhere at the first update: call update() after "
                                "loss.backward(), not after optimizer.zero_grad()")
        if self.default and not (len(self.micro) >= 2 or ranks is not None):
            self.instruments = tuple(ins for ins in self.instruments if ins.name != NOISE)  # no split to use

    def _halves(self, grads: list[torch.Tensor], size: int, ranks: list | None):
        """((g_small, b), (g_big, B)) for the two-batch instruments: the rank against all ranks,
        the first micro-batch against the batch, or (the batch, the batch) when the update cannot
        split (the estimate's averages then stay as they were, as for the engine's one-row batch)."""
        if not any(ins.halves for ins in self.instruments):
            return None
        if ranks is not None:
            return (ranks, size), (_copy(grads), size * self.world)
        if self.first_micro is not None and len(self.micro) >= 2:
            first = self.micro[0]
            return (torch._foreach_mul(self.first_micro, size / first), first), (None, size)
        return (None, size), (None, size)

    def _finish_pending(self) -> None:
        """Measure the pending update now that the parameters have moved to theta_{t+1}."""
        if self.pending is None:
            return
        count, samples, grads, before, halves, values = self.pending
        self.pending = None
        if halves is not None:  # None stands for the update's own gradient (kept once, not twice)
            (small, b), (big, n) = halves
            halves = ((grads if small is None else small, b), (grads if big is None else big, n))
        after = [p.detach() for p in self.params]
        step = Step(grads, before, after, self.ops, halves)
        self.measures, measured = measure(self.instruments, self.measures, step, count)
        self.recorder.add(count, samples, {**values, **measured})

    def _describe(self, batch_size: int):
        settings = dict(self.settings)
        if self.world > 1:
            settings.setdefault("world_size", self.world)
        given = settings.get("batch_size")
        if given is not None and given != batch_size:
            settings["batch_size_given"] = settings.pop("batch_size")  # kept, but the updates say otherwise
        outputs = tuple(out if ins.every == 1 else f"{out}@{ins.every}"
                        for ins in self.instruments for out in ins.outputs)
        return describe(self.run_id, self.name, settings, batch_size, outputs, self.model_name)


def _copy(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of ``tensors``, in one fused call."""
    with torch.no_grad():
        return torch._foreach_mul([t.detach() for t in tensors], 1.0)


def _rows(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BatchlabError(f"batch_size={batch_size!r} must be a whole number of rows >= 1")
    return batch_size
