"""``optax_monitor``: batchlab's per-step instruments inside a user's JAX loop, as an optax
``GradientTransformation``, and :class:`OptaxRecorder` to take what it measured to the store.

``optax_monitor(optimizer)`` wraps the user's optimizer: its updates are the optimizer's,
unchanged, and its state keeps the optimizer's state plus the instruments' (theta_0 for
dist_init, the noise estimate's averages) and the values of the last ``window`` updates. A
wrapper rather than a link of a chain because the instruments need the gradient (what enters
the optimizer) and the update (what leaves it) of one step: in ``optax.chain`` a transformation
sees one or the other.

Gradient accumulation: wrap ``optax.MultiSteps(optimizer, k)`` and say ``micro_batches=k``
(and ``micro_batch_size``): the monitor then sees each micro-batch's gradient, the first
micro-batch is the small batch and the k together the big one of the two-batch noise estimate,
and the instruments measure once per real update (the k-th call), with the mean of the k
gradients as the update's gradient, as ``MultiSteps`` uses it.

Inside ``jax.jit``: the instruments run on traced values through the JAX engine's own array
operations (``engine.step.OPS``) and ``instruments.base.measure``, so the numbers are the
engine's on the same steps. Nothing leaves the device during training; the host reads the
state when it wants (:meth:`OptaxRecorder.read`), at least every ``window`` updates.
"""

from __future__ import annotations

from functools import partial

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from batchlab.engine.step import OPS
from batchlab.errors import BatchlabError
from batchlab.instruments import step_instruments
from batchlab.instruments.base import Step, measure, start_measures
from batchlab.monitor.described import describe, new_run_id, plain_settings
from batchlab.monitor.recorder import Recorder
from batchlab.monitor.choices import DEFAULT_INSTRUMENTS, FLUSH_EVERY, NOISE, instrument_spec

WINDOW = 256  # updates whose values the state keeps (read them at least this often)


class MonitorState(NamedTuple):
    """The wrapped optimizer's state and what the monitor keeps (all arrays: jit-friendly)."""

    inner: Any
    measures: dict  # each instrument's state, by name
    count: jax.Array  # real updates so far
    micro: jax.Array  # micro-batches seen of the update in progress (0 without accumulation)
    first: Any  # the update's first micro-batch gradient (None without accumulation)
    total: Any  # the sum of its micro-batch gradients so far (None without accumulation)
    values: jax.Array  # (window, outputs): the values of update c at row (c - 1) % window


def optax_monitor(optimizer: optax.GradientTransformation, *, instruments: Any = None, every: int = 1,
                  micro_batches: int = 1, micro_batch_size: int | None = None,
                  window: int = WINDOW) -> optax.GradientTransformation:
    """``optimizer``, measured. ``instruments``: names, presets or instrument objects (default
    grad_norm, update_norm, dist_init, and noise_scale with ``micro_batches`` >= 2);
    ``every``: measure every k-th update only."""
    k, window = _whole(micro_batches, "micro_batches"), _whole(window, "window")
    chosen, small = _chosen(instruments, every, k, micro_batch_size)
    names = tuple(out for ins in chosen for out in ins.outputs)

    def init(params: Any) -> MonitorState:
        zeros = jax.tree.map(jnp.zeros_like, params) if k > 1 else None
        return MonitorState(optimizer.init(params), start_measures(chosen, params, OPS), jnp.zeros((), jnp.int32),
                            jnp.zeros((), jnp.int32), zeros, zeros, jnp.full((window, len(names)), jnp.nan))

    measured = partial(_measured, chosen, names, window)

    def update(grads: Any, state: MonitorState, params: Any = None) -> tuple[Any, MonitorState]:
        if params is None:
            raise BatchlabError("optax_monitor needs the parameters: call tx.update(grads, state, params)")
        updates, inner = optimizer.update(grads, state.inner, params)
        state = state._replace(inner=inner)
        if k == 1:
            return updates, measured(state, grads, params, updates, None)
        first_call = state.micro == 0
        first = jax.tree.map(lambda f, g: jnp.where(first_call, g, f), state.first, grads)
        total = jax.tree.map(lambda t, g: jnp.where(first_call, g, t + g), state.total, grads)
        state = state._replace(first=first, total=total, micro=(state.micro + 1) % k)

        def real_update(state: MonitorState) -> MonitorState:
            mean = jax.tree.map(lambda t: t / k, total)
            halves = None if small is None else ((first, small), (mean, k * small))
            return measured(state, mean, params, updates, halves)

        return updates, jax.lax.cond(state.micro == 0, real_update, lambda state: state, state)

    return optax.GradientTransformation(init, update)


def _measured(chosen: tuple, names: tuple, window: int, state: MonitorState, grads: Any, params: Any,
              updates: Any, halves: Any) -> MonitorState:
    """The state after measuring one update (its values in the window's row for it)."""
    count = state.count + 1
    step = Step(grads, params, optax.apply_updates(params, updates), OPS, halves)
    measures, values = measure(chosen, state.measures, step, count)
    row = jnp.stack([jnp.asarray(values[n], state.values.dtype) for n in names]) if names else state.values[0]
    return state._replace(measures=measures, count=count, values=state.values.at[(count - 1) % window].set(row))


def _chosen(instruments: Any, every: int, k: int, micro_batch_size: int | None) -> tuple:
    """The instruments to run, and the small batch's rows when one needs the two-batch split
    (which only micro-batches give an optax loop)."""
    spec = DEFAULT_INSTRUMENTS + ((NOISE,) if k > 1 else ()) if instruments is None else instruments
    chosen = step_instruments(instrument_spec(spec, every))
    if not any(ins.halves for ins in chosen):
        return chosen, None
    if k < 2 or micro_batch_size is None:
        raise BatchlabError("noise_scale in an optax loop needs micro-batches: wrap optax.MultiSteps(opt, k) "
                            "and give micro_batches=k and micro_batch_size")
    return chosen, _whole(micro_batch_size, "micro_batch_size")


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BatchlabError(f"{name}={value!r} must be a whole number >= 1")
    return value


def find_state(opt_state: Any) -> MonitorState:
    """The monitor's state inside ``opt_state`` (itself, or nested in tuples such as a chain's)."""
    if isinstance(opt_state, MonitorState):
        return opt_state
    if isinstance(opt_state, (tuple, list)):
        for inner in opt_state:
            try:
                return find_state(inner)
            except BatchlabError:
                pass
    raise BatchlabError("no optax_monitor state in this optimizer state: pass the state of the transformation "
                        "optax_monitor returned")


class OptaxRecorder:
    """The host side of :func:`optax_monitor`: ``read(opt_state)`` takes the updates measured
    since the last read (at most ``window`` ago) and writes the run to store ``db`` every
    ``flush_every`` updates and at :meth:`close`, as a monitored run named ``name``.
    ``batch_size``: rows per update (the micro-batches together). ``log_to``: also send the
    series to TensorBoard, MLflow or W&B, as :class:`~batchlab.monitor.TorchMonitor` does."""

    def __init__(self, db: str | Path | None = "batchlab.db", name: str = "my-run", *, batch_size: int,
                 settings: dict[str, Any] | None = None, flush_every: int | None = FLUSH_EVERY, log_to: Any = None,
                 **more_settings: Any):
        self.batch_size = _whole(batch_size, "batch_size")
        self.settings = plain_settings({**(settings or {}), **more_settings})
        self.name, self.run_id = str(name), new_run_id(str(name))
        self.seen, self.outputs = 0, None
        self.recorder = Recorder(db, self.run_id, self._describe, flush_every)
        if log_to is not None:
            self.recorder.log_to(log_to, self.name, self.settings)

    def read(self, opt_state: Any) -> int:
        """Record the updates measured since the last read; returns how many."""
        state = find_state(opt_state)
        count, values = jax.device_get((state.count, state.values))
        count, window = int(count), values.shape[0]
        if count - self.seen > window:
            raise BatchlabError(f"{count - self.seen} updates since the last read, but the state keeps the last "
                                f"{window}: read every {window} updates or fewer (or a larger window=)")
        names = self._names(state)
        for c in range(self.seen + 1, count + 1):
            row = values[(c - 1) % window]
            if np.isfinite(row).any():  # an update no instrument measured (every=) records nothing
                self.recorder.add(c, c * self.batch_size, dict(zip(names, row.tolist())))
            self.recorder.count_update(self.batch_size)
        new, self.seen = count - self.seen, count
        return new

    def steps(self) -> dict[str, np.ndarray]:
        return self.recorder.steps()

    def close(self) -> None:
        self.recorder.close()

    def _names(self, state: MonitorState) -> tuple[str, ...]:
        """The columns of ``state.values``: the instruments' outputs, cheapest instrument first
        (``step_instruments``' order, as in :func:`optax_monitor`; the measures' dict is keyed by
        instrument name, in whatever order JAX keeps it)."""
        if self.outputs is None:
            chosen = step_instruments(tuple(out for name in state.measures for out in _outputs_of(name)))
            self.outputs = tuple(out for ins in chosen for out in ins.outputs)
        return self.outputs

    def _describe(self, batch_size: int):
        return describe(self.run_id, self.name, self.settings, batch_size, self.outputs or (), "own model")


def _outputs_of(name: str) -> tuple[str, ...]:
    from batchlab.instruments import STEP_INSTRUMENTS

    return STEP_INSTRUMENTS[name].outputs
