"""``KerasCallback``: batchlab's per-step instruments inside a Keras 3 ``model.fit``.

A Keras callback never sees a gradient (its hooks get the logs), so for the length of a fit
the callback wraps two methods of the model it is given:

- ``model.optimizer.apply(grads, ...)``: what both backends' ``train_step`` calls with the
  step's gradient (the JAX backend through ``optimizer.stateless_apply``). The wrapper reads
  the trainable variables before and after the optimizer's own ``apply`` and measures the
  update from (g_t, theta_t, theta_{t+1}) with the engine's instruments
  (``instruments.base.measure``), so there is no "one call late" as in ``TorchMonitor``;
- ``model.train_step``: only to note the batch's rows (the length of the first array of ``x``)
  for ``samples_seen`` and the run's batch size.

Both are put back at ``on_train_end``.

**JAX backend** (``KERAS_BACKEND=jax``): the step is compiled (``jit_compile=True``, the
default) and stateless, so the wrapped ``apply`` runs while JAX traces it, on traced values,
with the JAX engine's own array operations (``engine.step.OPS``). What must survive from step
to step (the instruments' state, e.g. theta_0, an update counter, the sums below) is added to
the optimizer's variables for the fit (``stateless_apply`` carries them like its own slots) and
taken out at the end, so a saved model has only its own. The values leave the device through
``jax.debug.callback`` (a few scalars per update, with the update's number, so their order
does not matter), recorded at the next ``on_train_batch_end`` and, after
``jax.effects_barrier()``, at ``on_train_end``. ``run_eagerly=True`` runs the same code without
``jit``. ``on_train_begin`` rebuilds the train function so that it includes the wrapper.

**torch backend** (``KERAS_BACKEND=torch``): ``optimizer.apply`` runs eagerly, so the wrapper
copies theta_t (one fused copy, as ``TorchMonitor``), lets the optimizer step, and measures
with the torch backend's array operations (``engine.torch_ops.TorchOps``). ``jit_compile=True``
(``torch.compile`` of the step) is refused: the wrapper records on the host at each step.

**Gradient accumulation** (``SGD(..., gradient_accumulation_steps=k)``, k >= 2): ``apply`` sees
every micro-batch's mean gradient g_j (one ``train_step`` each, b_j rows); the optimizer steps
at every k-th call (``(_iterations + 1) % k == 0``, counted across epochs and fits) with
(g_j + accumulated) / k, the mean of the k g_j, and else only accumulates (JAX computes both
branches and picks with ``lax.cond``). One optimizer step is one recorded update: ``grad_norm``
is the norm of that mean (computed as Keras does), the rest as without accumulation. Decision:
an update's rows (``samples_seen``; the run's ``batch_size`` is the most common) are the
accumulated batch, sum_j b_j, k x the fit's ``batch_size`` for full micro-batches: the batch an
update averages. ``noise_scale`` (then a default instrument) takes the micro-batches as its small
batches and their mean as the big one (``keras_model.two_batch``), from sums over the
micro-batches. An update that finishes an earlier fit's micro-batches counts this fit's rows and
leaves the noise averages as they were; micro-batches left at a fit's end are not recorded.

Not supported (one-line errors): a model not compiled or without an optimizer, another backend
(TensorFlow, OpenVINO), a ``LossScaleOptimizer`` (``apply`` sees scaled gradients), and
``noise_scale`` without accumulation (``fit`` gives no split of a batch).

Each ``fit`` is one monitored run (a new id), written every ``flush_every`` updates and at the
end of the fit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import keras
import numpy as np

from batchlab.errors import BatchlabError
from batchlab.instruments import step_instruments
from batchlab.instruments.base import Step, measure, start_measures
from batchlab.monitor.choices import DEFAULT_INSTRUMENTS, FLUSH_EVERY, NOISE, instrument_spec
from batchlab.monitor.described import new_run_id, plain_settings
from batchlab.monitor.keras_model import (accumulation_steps, accumulators, added_variables, batch_rows, copy_tensors,
                                          describe_fit, instruments_for, micro_batch_sums, optimizer_of,
                                          optimizer_settings, rows_of, two_batch)
from batchlab.monitor.recorder import Recorder, check_flush_every

BACKENDS = ("jax", "torch")


class KerasCallback(keras.callbacks.Callback):
    """Record a Keras 3 ``model.fit`` (JAX or torch backend) as a monitored run.

    Args:
        db: the batchlab store (created if missing); None keeps the records in memory
            (:meth:`steps`).
        name: the run's name (a label: each fit is a new run with its own id).
        instruments: names, presets or instrument objects; None: grad_norm, update_norm,
            dist_init, and noise_scale when the optimizer has gradient_accumulation_steps.
        every: measure every k-th update only.
        flush_every: updates between writes to the store (None: at least 500, and writes kept
            under 2% of the time; ``monitor/choices.py``).
        settings: the run's settings (``lr``, ``data``, anything else); the optimizer's class,
            lr, momentum, weight decay and accumulation steps are added unless given.
            Keyword arguments join them.
        log_to: also send the series to TensorBoard, MLflow or W&B (as ``TorchMonitor``).
    """

    def __init__(self, db: str | Path | None = "batchlab.db", name: str = "keras-run", *, instruments: Any = None,
                 every: int = 1, flush_every: int | None = FLUSH_EVERY, settings: dict[str, Any] | None = None,
                 log_to: Any = None, **more_settings: Any):
        super().__init__()
        self.backend = keras.backend.backend()
        if self.backend not in BACKENDS:
            raise BatchlabError(f"KerasCallback runs on Keras' jax or torch backend, not {self.backend!r}: set "
                                f"KERAS_BACKEND=jax (or torch) before Keras is first imported")
        self.default = instruments is None
        self.chosen = step_instruments(instrument_spec(DEFAULT_INSTRUMENTS + (NOISE,) if self.default
                                                       else instruments, every))
        if any(ins.halves and ins.name != NOISE for ins in self.chosen):
            raise BatchlabError("Keras' micro-batches give the two-batch instruments noise_scale's split only")
        check_flush_every(flush_every)
        self.db, self.name, self.flush_every, self.log = db, str(name), flush_every, log_to
        self.given = {**(settings or {}), **more_settings}
        plain_settings(self.given)  # bad setting names now, not at the end of a fit
        self.recorder: Recorder | None = None
        self.run_id: str | None = None
        self.wrapped = None  # (optimizer, model) while a fit is monitored

    # ------------------------------------------------------------------ Keras' hooks

    def on_train_begin(self, logs=None) -> None:
        self.close()  # a fit that raised before its end leaves its run to close here
        model = self.model
        optimizer = optimizer_of(model)
        if self.backend == "torch" and getattr(model, "jit_compile", False) and not model.run_eagerly:
            raise BatchlabError("KerasCallback on the torch backend needs an eager step: compile the model "
                                "with jit_compile=False (the default there)")
        self.k = accumulation_steps(optimizer)
        self.instruments = instruments_for(self.chosen, self.k, self.default)
        self.noise = any(ins.halves for ins in self.instruments)
        self.outputs = tuple(out for ins in self.instruments for out in ins.outputs)
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.watched = list(model.trainable_variables)
        self.ids = [id(v) for v in self.watched]
        if not self.watched:
            raise BatchlabError(f"{model.name} has no trainable variables: nothing to measure")
        self.iterations, self.accumulators = optimizer._iterations, accumulators(optimizer, self.watched)
        self.settings = plain_settings({**optimizer_settings(optimizer), **self.given})
        self.run_id = new_run_id(self.name)
        self.model_name = type(model).__name__
        self.recorder = Recorder(self.db, self.run_id, functools.partial(
            describe_fit, self.run_id, self.name, self.settings, self.instruments, self.model_name),
            self.flush_every)
        if self.log is not None:
            self.recorder.log_to(self.log, self.name, self.settings)
        self.count, self.recorded, self.samples, self.rows = 0, 0, 0, None
        self.inbox, self.added = {}, []  # inbox: update -> (rows, values); added: the optimizer's variables (JAX)
        if self.backend == "jax":
            self._start_jax(optimizer)
        else:
            from batchlab.engine.torch_ops import TorchOps

            self.ops = TorchOps(1)
            self.measures = start_measures(self.instruments, copy_tensors([v.value for v in self.watched]), self.ops)
            self.sums = (0.0,) * 4  # micro_batch_sums since the last update
        self._wrap(model, optimizer)

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._drain()

    def on_train_end(self, logs=None) -> None:
        self.close()

    def close(self) -> None:
        """Record what has arrived, put the model's methods back and write the run (what
        ``on_train_end`` does; Keras calls no hook when a fit raises, so call this then)."""
        if self.recorder is None:
            return
        try:
            if self.backend == "jax":
                import jax

                jax.effects_barrier()  # every update's values have reached _receive
            self._drain()
        finally:
            self._unwrap()
            self.last, self.recorder = self.recorder, None
            self.last.close()

    def steps(self) -> dict[str, np.ndarray]:
        """The per-step records of the fit in progress (or the last one, with ``db=None``)."""
        recorder = self.recorder or getattr(self, "last", None)
        if recorder is None:
            raise BatchlabError("KerasCallback has recorded no fit yet")
        return recorder.steps()

    # ------------------------------------------------------------------ the wrappers

    def _wrap(self, model, optimizer) -> None:
        original_apply, original_step = optimizer.apply, model.train_step

        @functools.wraps(original_apply)
        def apply(grads, trainable_variables=None):
            if trainable_variables is not None and [id(v) for v in trainable_variables] != self.ids:
                return original_apply(grads, trainable_variables)  # not the model's step
            return self._apply_jax(original_apply, grads) if self.backend == "jax" else \
                self._apply_torch(original_apply, grads)

        @functools.wraps(original_step)
        def train_step(*args, **kwargs):
            self.rows = rows_of(args[-1] if args else kwargs.get("data"))
            return original_step(*args, **kwargs)

        optimizer.apply = apply
        model.train_step = train_step
        self.wrapped = (optimizer, model)
        model.make_train_function(force=True)  # the compiled step must see the wrapper and added variables

    def _unwrap(self) -> None:
        if self.wrapped is None:
            return
        optimizer, model = self.wrapped
        self.wrapped = None
        for name, owner in (("apply", optimizer), ("train_step", model)):
            if name in vars(owner):
                delattr(owner, name)
        added = {id(v) for v in self.added}  # the optimizer's variables are its own again (a saved model loads)
        optimizer._variables[:] = [v for v in optimizer._variables if id(v) not in added]
        model.train_function = None  # the next fit compiles a step without the wrapper

    # torch: eager, the values are measured and recorded at once
    def _apply_torch(self, original_apply, grads):
        import torch

        rows, k = batch_rows(self.rows, self.given.get("batch_size")), self.k
        update = k == 1 or (int(self.iterations.value) + 1) % k == 0  # Keras' own test, before apply counts
        due = any((self.count + 1) % ins.every == 0 for ins in self.instruments)
        used = [g.detach() if g is not None else torch.zeros_like(v.value) for g, v in zip(grads, self.watched)]
        sq = self.ops.sq_norms([used])[0] if self.noise and due else 0.0
        self.sums = tuple(a + b for a, b in zip(self.sums, micro_batch_sums(sq, rows)))
        if update and due:
            if k > 1:  # the mean the optimizer applies, as it computes it: (g + accumulated) / k
                used = torch._foreach_div(torch._foreach_add(used, [a.value for a in self.accumulators]), k)
            before = copy_tensors([v.value for v in self.watched])
        result = original_apply(grads)
        if update:
            self.count, values = self.count + 1, None
            if due:
                halves, small_sq = two_batch(self.sums, used, k) if self.noise else (None, None)
                step = Step(used, before, [v.value.detach() for v in self.watched], self.ops, halves, small_sq)
                self.measures, values = measure(self.instruments, self.measures, step, self.count)
            self.inbox[self.count], self.sums = (int(self.sums[3]), values), (0.0,) * 4
        return result

    # JAX: traced, stateless; the state lives in optimizer variables, the values leave by a callback
    def _start_jax(self, optimizer) -> None:
        import jax.numpy as jnp

        from batchlab.engine.step import OPS

        self.ops = OPS
        held = {"measures": start_measures(self.instruments, [jnp.asarray(v.value) for v in self.watched], OPS),
                "count": jnp.zeros((), "int32"), "sums": jnp.zeros(4, "float32")}  # sums: since the last update
        self.added, self.treedef = added_variables(optimizer, held)

    def _apply_jax(self, original_apply, grads):
        import jax
        import jax.numpy as jnp

        rows, k = batch_rows(self.rows, self.given.get("batch_size")), self.k
        grads = [jnp.asarray(g) for g in grads]
        before = [jnp.asarray(v.value) for v in self.watched]
        update = (jnp.asarray(self.iterations.value) + 1) % k == 0  # Keras' own test (always, for k = 1)
        accumulated = [jnp.asarray(a.value) for a in self.accumulators]
        result = original_apply(grads)
        after = [jnp.asarray(v.value) for v in self.watched]
        held = jax.tree.unflatten(self.treedef, [jnp.asarray(v.value) for v in self.added])
        sq = self.ops.sq_norms([grads])[0] if self.noise else 0.0
        sums = held["sums"] + jnp.array(micro_batch_sums(sq, rows), "float32")
        count = held["count"] + update.astype("int32")

        def measured(state):
            used = grads if k == 1 else [(g + a) / k for g, a in zip(grads, accumulated)]  # as the optimizer
            halves, small_sq = two_batch(sums, used, k) if self.noise else (None, None)
            state, values = measure(self.instruments, state, Step(used, before, after, self.ops, halves, small_sq),
                                    count)
            jax.debug.callback(self._receive, count, sums[3], values)
            return state

        state = measured(held["measures"]) if k == 1 else jax.lax.cond(update, measured, lambda s: s, held["measures"])
        held = {"measures": state, "count": count, "sums": jnp.where(update, 0.0, sums)}
        for variable, leaf in zip(self.added, jax.tree.leaves(held)):
            variable.assign(leaf)
        return result

    def _receive(self, count, rows, values) -> None:
        values = {name: float(np.asarray(values[name])) for name in self.outputs}  # the instruments' order
        measured = any(v == v for v in values.values())  # an update no instrument measured (every=) records nothing
        self.inbox[int(count)] = (int(np.asarray(rows)), values if measured else None)

    def _drain(self) -> None:
        """Record the updates received so far, in order (a later one waits for the ones before)."""
        if self.recorder is None:
            return
        while self.recorded + 1 in self.inbox:
            count = self.recorded + 1
            rows, values = self.inbox.pop(count)
            self.samples += rows
            if values is not None:
                self.recorder.add(count, self.samples, values)
            self.recorder.count_update(rows)
            self.recorded = count

