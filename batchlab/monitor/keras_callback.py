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
with the JAX engine's own array operations (``engine.step.OPS``). The instruments' state
(theta_0 for ``dist_init``) and an update counter must survive from step to step inside that
state, so they are added to the optimizer's variables for the fit (``stateless_apply``
carries them in and out like the optimizer's own slots) and taken out again at the end, so a
saved model has only its own. The values leave the device through ``jax.debug.callback``
(a few scalars per update, with the update's number, so their order does not matter); the
callback records them at the next ``on_train_batch_end`` and, after ``jax.effects_barrier()``,
at ``on_train_end``. ``run_eagerly=True`` runs the same code without ``jit``. The train
function is rebuilt at ``on_train_begin`` (``make_train_function(force=True)``) so the
compiled step includes the wrapper and the added variables.

**torch backend** (``KERAS_BACKEND=torch``): ``optimizer.apply`` runs eagerly, so the wrapper
copies theta_t (one fused copy, as ``TorchMonitor``), lets the optimizer step, and measures
with the torch backend's array operations (``engine.torch_ops.TorchOps``). ``jit_compile=True``
(``torch.compile`` of the step) is refused: the wrapper records on the host at each step.

Not supported (one-line errors at ``on_train_begin``): a model not compiled or without an
optimizer, another backend (TensorFlow, OpenVINO), an optimizer with
``gradient_accumulation_steps`` or a ``LossScaleOptimizer`` (the gradient ``apply`` sees is not
the step's), and two-batch instruments (``noise_scale``): ``fit`` gives no split of a batch.

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
from batchlab.monitor.choices import DEFAULT_INSTRUMENTS, FLUSH_EVERY, instrument_spec
from batchlab.monitor.keras_model import optimizer_of, optimizer_settings, rows_of
from batchlab.monitor.described import describe, new_run_id, plain_settings
from batchlab.monitor.recorder import Recorder

BACKENDS = ("jax", "torch")


class KerasCallback(keras.callbacks.Callback):
    """Record a Keras 3 ``model.fit`` (JAX or torch backend) as a monitored run.

    Args:
        db: the batchlab store (created if missing); None keeps the records in memory
            (:meth:`steps`).
        name: the run's name (a label: each fit is a new run with its own id).
        instruments: names, presets or instrument objects; None: grad_norm, update_norm,
            dist_init. Two-batch instruments (noise_scale) are refused: fit gives no split.
        every: measure every k-th update only.
        flush_every: updates between writes to the store.
        settings: the run's settings (``lr``, ``data``, anything else); the optimizer's class,
            learning rate, momentum and weight decay are added unless given. Keyword arguments
            join them.
        log_to: also send the series to TensorBoard, MLflow or W&B (as ``TorchMonitor``).
    """

    def __init__(self, db: str | Path | None = "batchlab.db", name: str = "keras-run", *, instruments: Any = None,
                 every: int = 1, flush_every: int = FLUSH_EVERY, settings: dict[str, Any] | None = None,
                 log_to: Any = None, **more_settings: Any):
        super().__init__()
        self.backend = keras.backend.backend()
        if self.backend not in BACKENDS:
            raise BatchlabError(f"KerasCallback runs on Keras' jax or torch backend, not {self.backend!r}: set "
                                f"KERAS_BACKEND=jax (or torch) before Keras is first imported")
        self.instruments = step_instruments(instrument_spec(DEFAULT_INSTRUMENTS if instruments is None
                                                             else instruments, every))
        if any(ins.halves for ins in self.instruments):
            raise BatchlabError("noise_scale needs two batch sizes, and Keras' fit gives no split of a batch: "
                                "record it with TorchMonitor/optax_monitor micro-batches instead")
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise BatchlabError(f"flush_every={flush_every!r} must be a whole number of updates >= 1")
        self.db, self.name, self.flush_every, self.log = db, str(name), flush_every, log_to
        self.given = {**(settings or {}), **more_settings}
        plain_settings(self.given)  # bad setting names now, not at the end of a fit
        self.outputs = tuple(out for ins in self.instruments for out in ins.outputs)
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
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.watched = list(model.trainable_variables)
        self.ids = [id(v) for v in self.watched]
        if not self.watched:
            raise BatchlabError(f"{model.name} has no trainable variables: nothing to measure")
        self.settings = plain_settings({**optimizer_settings(optimizer), **self.given})
        self.run_id = new_run_id(self.name)
        self.model_name = type(model).__name__
        self.recorder = Recorder(self.db, self.run_id, self._describe, self.flush_every)
        if self.log is not None:
            self.recorder.log_to(self.log, self.name, self.settings)
        self.count, self.recorded, self.samples, self.rows = 0, 0, 0, None
        self.inbox: dict[int, tuple[int, dict]] = {}
        self.added: list = []
        if self.backend == "jax":
            self._start_jax(optimizer)
        else:
            from batchlab.engine.torch_ops import TorchOps

            self.ops = TorchOps(1)
            self.measures = start_measures(self.instruments, _copy([v.value for v in self.watched]), self.ops)
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

    def _batch_rows(self) -> int:
        rows = self.rows if self.rows is not None else self.given.get("batch_size")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise BatchlabError("KerasCallback cannot tell the batch's rows (model.train_step was not called "
                                "through the model): pass batch_size= to KerasCallback")
        return rows

    def _due(self, count: int) -> bool:
        return any(count % ins.every == 0 for ins in self.instruments)

    # torch: eager, the values are measured and recorded at once
    def _apply_torch(self, original_apply, grads):
        import torch

        rows = self._batch_rows()
        self.count += 1
        due = self._due(self.count)
        if due:
            used = [g.detach() if g is not None else torch.zeros_like(v.value) for g, v in zip(grads, self.watched)]
            before = _copy([v.value for v in self.watched])
        result = original_apply(grads)
        if due:
            after = [v.value.detach() for v in self.watched]
            step = Step(used, before, after, self.ops)
            self.measures, values = measure(self.instruments, self.measures, step, self.count)
            self.inbox[self.count] = (rows, values)
        else:
            self.inbox[self.count] = (rows, None)
        return result

    # JAX: traced, stateless; the state lives in optimizer variables, the values leave by a callback
    def _start_jax(self, optimizer) -> None:
        import jax
        import jax.numpy as jnp

        from batchlab.engine.step import OPS

        self.ops = OPS
        state = start_measures(self.instruments, [jnp.asarray(v.value) for v in self.watched], OPS)
        leaves, self.treedef = jax.tree.flatten(state)
        self.state_vars = []
        for i, leaf in enumerate(leaves):
            variable = optimizer.add_variable(tuple(leaf.shape), dtype=str(leaf.dtype), name=f"batchlab_state_{i}")
            variable.assign(jnp.array(leaf, copy=True))  # its own buffer: fit donates every state array
            self.state_vars.append(variable)
        self.counter = optimizer.add_variable((), dtype="int32", name="batchlab_count")
        self.added = [*self.state_vars, self.counter]

    def _apply_jax(self, original_apply, grads):
        import jax
        import jax.numpy as jnp

        rows = self._batch_rows()
        grads = [jnp.asarray(g) for g in grads]
        before = [jnp.asarray(v.value) for v in self.watched]
        result = original_apply(grads)
        after = [jnp.asarray(v.value) for v in self.watched]
        count = jnp.asarray(self.counter.value) + 1
        state = jax.tree.unflatten(self.treedef, [jnp.asarray(v.value) for v in self.state_vars])
        state, values = measure(self.instruments, state, Step(grads, before, after, self.ops), count)
        for variable, leaf in zip(self.state_vars, jax.tree.leaves(state)):
            variable.assign(leaf)
        self.counter.assign(count)
        jax.debug.callback(functools.partial(self._receive, rows), count, values)
        return result

    def _receive(self, rows: int, count, values) -> None:
        values = {name: float(np.asarray(values[name])) for name in self.outputs}  # the instruments' order
        measured = any(v == v for v in values.values())  # an update no instrument measured (every=) records nothing
        self.inbox[int(count)] = (rows, values if measured else None)

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

    def _describe(self, batch_size: int):
        settings = dict(self.settings)
        given = settings.get("batch_size")
        if given is not None and given != batch_size:
            settings["batch_size_given"] = settings.pop("batch_size")
        outputs = tuple(out if ins.every == 1 else f"{out}@{ins.every}"
                        for ins in self.instruments for out in ins.outputs)
        return describe(self.run_id, self.name, settings, batch_size, outputs, self.model_name)


def _copy(tensors: list) -> list:
    """Detached copies of torch tensors, in one fused call."""
    import torch

    with torch.no_grad():
        return torch._foreach_mul([t.detach() for t in tensors], 1.0)
