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
each rank's own gradient is a small batch and the all-reduced one the big (the ranks' rows
together): the mean of the ranks' squared norms stands for the small batch's, as the engine's
over devices (``distributed.py``); every rank measures, only rank 0 writes the store.

When: the instruments measure update t from (g_t, theta_t, theta_{t+1}), but at ``update()``
the step has not happened yet. So ``update()`` copies g_t and theta_t into a row of a block
(``block.py``), theta_{t+1} is copied at the next call (or at ``close()``), and the rows are
measured together every few dozen updates, at each write to the store, at :meth:`steps` and at
``close()``: the values are the engine's, measured later. Cost: two copies an update (about
50-75 us an update on the digits MLP here); memory: the block, up to 4 MiB (at least one row).

The instruments are the engine's own objects (``instruments/step/``), run through the torch
backend's array operations (``engine.torch_step.TorchOps``), so a monitored run and a
batchlab run of the same model, batches and initial weights record the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from batchlab.engine.torch_ops import TorchOps
from batchlab.errors import BatchlabError
from batchlab.instruments import step_instruments
from batchlab.instruments.base import start_measures
from batchlab.monitor.block import Block, Row
from batchlab.monitor.choices import DEFAULT_INSTRUMENTS, FLUSH_EVERY, NOISE, instrument_spec
from batchlab.monitor.described import describe, new_run_id, plain_settings
from batchlab.monitor.distributed import RankGradients, is_ddp, process_group_size
from batchlab.monitor.per_sample import SAMPLE_OUTPUTS, SampleNoise
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
        flush_every: updates between writes to the store (None: at least 500, and writes kept
            under 2% of the time; ``monitor/choices.py``).
        settings: the run's settings as key/values (``batch_size``, ``lr``, ``momentum``,
            ``optimizer`` as a name or the optimizer object, ``data``, ``model``, anything else);
            keyword arguments are added to them.
        log_to: also send the recorded series to TensorBoard, MLflow or W&B (``"tensorboard"``,
            ``"mlflow:file:./mlruns"``, a sink object, or a list; ``batchlab/sinks/``), at each
            flush to the store; under DDP rank 0 only.
        per_sample_every: at every k-th update also the exact estimate of ||G||^2 and tr(Sigma)
            from the batch's per-sample gradients (``per_sample.py``; ``update()`` then needs
            ``inputs=`` and ``targets=``), recorded as ``sample_grad_sq``, ``sample_trace``,
            ``sample_grad_sq_se`` and ``sample_noise_scale``.
        loss_fn: ``loss_fn(output, target)`` (mean reduction), for ``per_sample_every``.
    """

    def __init__(self, model: torch.nn.Module, db: str | Path | None = "batchlab.db", name: str = "my-run", *,
                 instruments: Any = None, every: int = 1, flush_every: int | None = FLUSH_EVERY,
                 settings: dict[str, Any] | None = None, log_to: Any = None, per_sample_every: int | None = None,
                 loss_fn: Any = None, **more_settings: Any):
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
        self.settings = plain_settings({**(settings or {}), **more_settings})
        self.per_sample_every = per_sample_every
        self.sample_noise = None
        if per_sample_every is not None:
            if isinstance(per_sample_every, bool) or not isinstance(per_sample_every, int) or per_sample_every < 1:
                raise BatchlabError(f"per_sample_every={per_sample_every!r} must be a whole number of updates >= 1")
            self.sample_noise = SampleNoise(model, loss_fn, self.params)
        self.rank, self.world = process_group_size()
        self.ranks = RankGradients(model) if self.world > 1 and is_ddp(model) else None
        self.model_name = type(model.module if is_ddp(model) else model).__name__
        self.name, self.run_id = str(name), new_run_id(str(name))
        self.count, self.samples = 0, 0
        self.block: Block | None = None  # made at the first call, when the loop's split is known
        self.measures: dict = {}
        self.micro: list[int] = []  # sizes of this update's micro-batches so far
        self.closed = False
        self.recorder = Recorder(db if self.rank == 0 else None, self.run_id, self._describe, flush_every,
                                 before_flush=self._measure)
        if log_to is not None and self.rank == 0:
            self.recorder.log_to(log_to, self.name, self.settings)

    # ------------------------------------------------------------------ the loop's calls

    def update(self, batch_size: int | None = None, *, micro_batch: bool = False, loss: Any = None,
               inputs: Any = None, targets: Any = None) -> None:
        """Read the gradient of the update about to be made (after ``backward()``, before
        ``optimizer.step()``). ``batch_size``: rows of the batch (of this micro-batch with
        ``micro_batch=True``; under DDP, of this rank). ``loss``: the batch's mean loss, recorded
        as ``mb_loss``. ``inputs``, ``targets``: the batch, needed at every ``per_sample_every``-th
        update for the exact per-sample estimate (``per_sample.py``)."""
        if self.closed:
            raise BatchlabError("update() after close(): make a new TorchMonitor for another run")
        if self.block is None:
            self._start(micro_batch)
        self._note_after()
        if micro_batch:
            self._micro_batch(batch_size)
            return
        size = self._step_size(batch_size)
        grads = [p.grad for p in self.params]
        if all(g is None for g in grads):
            raise BatchlabError("update() found no gradient: call it after loss.backward() and before "
                                "optimizer.step() and zero_grad()")
        self.count += 1
        if self.count == 1:
            self._first_update(grads)
        due = self._due(self.count)
        row, big = self._row(due, size, loss, inputs, targets)
        self.samples += big
        row.samples = self.samples
        if self.ranks is not None:
            self.ranks.capture = self._due(self.count + 1)
        self.recorder.count_update(big)  # may write the store, which measures the block first
        if self.block.full():
            self._measure()
        if due:
            self.block.add(row, grads)
        self.block.forget_now()  # the parameters change at the optimizer's step
        self.micro = []

    def _row(self, due: bool, size: int, loss: Any, inputs: Any, targets: Any) -> tuple[Row, int]:
        """This update's row (its split and the values known now) and its batch over all ranks."""
        row = Row(self.count, 0, 0)
        if loss is not None:
            row.values["mb_loss"] = loss.detach() if torch.is_tensor(loss) else loss
        if self.per_sample_every and self.count % self.per_sample_every == 0:
            if inputs is None or targets is None:
                raise BatchlabError(f"update {self.count} needs inputs= and targets= (the batch) for the per-sample "
                                    f"estimate (per_sample_every={self.per_sample_every})")
            row.values.update(self.sample_noise.measure(inputs, targets))
        big = size * self.world
        if due and self.ranks is not None:
            mean = self.ranks.mean_over_ranks(size)
            if mean is not None:
                row.small_sq, small, big = mean
                row.split = (small, big)
        elif due and len(self.micro) >= 2 and self.block.small is not None:
            row.split = (self.micro[0], size)
        return row, big

    def close(self) -> None:
        """Measure the last update (its parameters are theta_{t+1} now) and write the run."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.block is not None:
                self._note_after()
        finally:
            self.recorder.close()

    def steps(self) -> dict[str, Any]:
        """The per-step records so far (NumPy arrays by name; the last update is measured at
        the next call or at close)."""
        self._measure()
        return self.recorder.steps()

    def __enter__(self) -> "TorchMonitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ inside

    def _start(self, micro_batch: bool) -> None:
        """The block, now that the loop's first call says whether updates split; the default
        instruments leave the noise estimate out where they do not."""
        if self.default and not (micro_batch or self.ranks is not None):
            self.instruments = tuple(ins for ins in self.instruments if ins.name != NOISE)
        halves = any(ins.halves for ins in self.instruments)
        self.block = Block(self.params, small=halves and micro_batch and self.ranks is None)
        self.measures = start_measures(self.instruments, [torch.cat([p.detach().reshape(-1) for p in self.params])
                                                          .to(self.block.grads.dtype)], TorchOps(1))

    def _due(self, count: int) -> bool:
        return (any(count % ins.every == 0 for ins in self.instruments)
                or bool(self.per_sample_every and count % self.per_sample_every == 0))

    def _note_after(self) -> None:
        """The parameters now are theta_{t+1} of a row waiting for them."""
        pending = self.block.pending()
        if pending is not None:
            pending.after = self.block.theta_now()

    def _measure(self) -> None:
        """Measure the block's complete rows and hand their values to the recorder."""
        if self.block is None:
            return
        self.measures, rows = self.block.measure(self.instruments, self.measures)
        for row, values in rows:
            self.recorder.add(row.count, row.samples, values)

    def _micro_batch(self, batch_size: int | None) -> None:
        if batch_size is None:
            raise BatchlabError("update(micro_batch=True) needs batch_size: the rows of that micro-batch")
        self.micro.append(_rows(batch_size))
        if len(self.micro) == 1 and self._due(self.count + 1) and self.block.small is not None:
            if all(p.grad is None for p in self.params):
                raise BatchlabError("update(micro_batch=True) found no gradient: call it after that "
                                    "micro-batch's loss.backward()")
            if self.block.full():
                self._measure()
            self.block.keep_small([p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params])

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

    def _first_update(self, grads: list[torch.Tensor | None]) -> None:
        """A check that needs one look at a real step, and the default instruments' last choice."""
        if not any(bool(g.any()) for g in grads if g is not None):
            raise BatchlabError("the gradient is zero everywhere at the first update: call update() after "
                                "loss.backward(), not after optimizer.zero_grad()")
        if self.default and len(self.micro) < 2 and self.ranks is None:
            self.instruments = tuple(ins for ins in self.instruments if ins.name != NOISE)  # no split to use

    def _describe(self, batch_size: int):
        settings = dict(self.settings)
        if self.world > 1:
            settings.setdefault("world_size", self.world)
        given = settings.get("batch_size")
        if given is not None and given != batch_size:
            settings["batch_size_given"] = settings.pop("batch_size")  # kept, but the updates say otherwise
        outputs = tuple(out if ins.every == 1 else f"{out}@{ins.every}"
                        for ins in self.instruments for out in ins.outputs)
        if self.per_sample_every:
            outputs += tuple(f"{out}@{self.per_sample_every}" for out in SAMPLE_OUTPUTS.values())
        return describe(self.run_id, self.name, settings, batch_size, outputs, self.model_name)


def _rows(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BatchlabError(f"batch_size={batch_size!r} must be a whole number of rows >= 1")
    return batch_size
