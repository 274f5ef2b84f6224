"""What a per-step instrument is, what it sees, and when it runs.

A :class:`StepInstrument` is optax-like: ``init(params, ops) -> state`` once, then at each
update it measures ``update(state, step) -> (state, values)``. ``step`` (:class:`Step`) holds
what an optimizer step has: the gradient it used, the parameters before and after, and,
when the instrument asks for them, the two half-batch gradients. ``ops`` (:class:`Ops`) are
the array operations of whoever runs it: the JAX engine (inside the compiled step, vmapped
over runs), the torch backend (tensors with a leading run axis), or later a user's own
loop. Instruments import nothing of the engine, so the same code runs in all of them.

A *norm instrument* (:func:`norm`) records the L2 norm of one vector of the step
(Cockpit's two-point quantities keep their own reference in their state); engines compute
the norms of all of a step's norm instruments in one pass.

When: every update, or every k-th (``name@k``: the updates whose number is a multiple of k;
the others record NaN and leave the instrument's state as it was). ``cost`` orders presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np


class Ops(Protocol):
    """Array operations an instrument may use; values are scalars per run (JAX, vmapped) or
    vectors with one entry per run (torch)."""

    nan: float

    def sq_norms(self, trees: list) -> Any: ...  # ||t||^2 of each tree (all leaves flattened), stacked
    def sub(self, a: Any, b: Any) -> Any: ...  # a - b, leaf by leaf
    def sqrt(self, x: Any) -> Any: ...
    def where(self, condition: Any, a: Any, b: Any) -> Any: ...
    def maximum(self, x: Any, y: Any) -> Any: ...
    def stack(self, values: list, axis: int = 0) -> Any: ...
    def concatenate(self, values: list, axis: int = 0) -> Any: ...
    def zeros(self, shape: tuple[int, ...]) -> Any: ...
    def asarray(self, value: Any, like: Any) -> Any: ...  # ``value`` in ``like``'s dtype
    # (new state, values) of ``update(state)`` at updates that are multiples of k; else the
    # state as it was and NaN for each of ``outputs``
    def every(self, k: int, count: Any, update: Callable, state: Any, outputs: tuple[str, ...]) -> tuple[Any, dict]: ...


class Step(NamedTuple):
    """What one optimizer update gives an instrument."""

    grad: Any  # the gradient the update used (batch mean, or sum with a sum reduction)
    params: Any  # theta_t, before the update
    new_params: Any  # theta_{t+1}
    ops: Ops
    halves: Any = None  # ((g_small, B_small), (g_big, B_big)): mean gradients of the first half and the batch
    # A batch split over devices gives, instead of g_small, the mean of |g_small|^2 over the devices'
    # parts (B_small: their effective rows); ``halves`` then holds (None, B_small) as its small batch.
    small_sq: Any = None


def stateless(params: Any, ops: Ops) -> None:
    """The state of an instrument that keeps none."""
    return None


@dataclass(frozen=True)
class StepInstrument:
    """A quantity measured at every update (or every ``every``-th); ``outputs`` are its stable
    column names in ``result.steps`` and the store (``name`` by default)."""

    name: str
    doc: str = field(repr=False)
    update: Callable[[Any, Step], tuple[Any, dict[str, Any]]] = field(repr=False)
    init: Callable[[Any, Ops], Any] = field(default=stateless, repr=False)
    outputs: tuple[str, ...] = ()
    halves: bool = False  # needs the two half-batch gradients (the batch is computed as two halves)
    cost: int = 1
    every: int = 1
    norm_of: Callable[[Any, Step], Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.outputs:
            object.__setattr__(self, "outputs", (self.name,))


def norm(name: str, of: Callable[[Any, Step], Any], doc: str, init: Callable[[Any, Ops], Any] = stateless,
         cost: int = 1) -> StepInstrument:
    """An instrument recording ||of(state, step)||_2 (all parameters flattened)."""
    def update(state: Any, step: Step) -> tuple[Any, dict[str, Any]]:
        return state, {name: step.ops.sqrt(step.ops.sq_norms([of(state, step)])[0])}

    return StepInstrument(name, doc, update, init, cost=cost, norm_of=of)


def start_measures(instruments: tuple[StepInstrument, ...], params: Any, ops: Ops) -> dict:
    """Each instrument's initial state, by name."""
    return {ins.name: ins.init(params, ops) for ins in instruments}


def measure(instruments: tuple[StepInstrument, ...], states: dict, step: Step, count: Any) -> tuple[dict, dict]:
    """Each instrument's new state and values at update ``count`` (1-based). The norms of the
    norm instruments that run at every update are taken together (``ops.sq_norms``: one pass
    in the JAX engine); an instrument with a schedule runs through ``ops.every``."""
    ops = step.ops
    together = [ins for ins in instruments if ins.norm_of is not None and ins.every == 1]
    values, states = {}, dict(states)
    if together:
        squares = ops.sq_norms([ins.norm_of(states[ins.name], step) for ins in together])
        values.update((ins.name, ops.sqrt(squares[i])) for i, ins in enumerate(together))
    for ins in instruments:
        if ins in together:
            continue
        if ins.every == 1:
            states[ins.name], out = ins.update(states[ins.name], step)
        else:
            states[ins.name], out = ops.every(ins.every, count, lambda state, ins=ins: ins.update(state, step),
                                              states[ins.name], ins.outputs)
        values.update(out)
    return states, values


@dataclass(frozen=True)
class Schedule:
    """When an instrument runs: every ``every`` steps or epochs, at given epochs, or log-spaced."""

    unit: str = "step"  # "step" or "epoch"
    every: int = 1
    at: tuple[int, ...] = ()
    log_points: int = 0  # > 0: about this many log-spaced points over the run

    def mask(self, total: int) -> np.ndarray:
        """Which of 1..total (steps or epochs) are recorded."""
        points = np.arange(1, total + 1)
        if self.at:
            return np.isin(points, self.at)
        if self.log_points:
            chosen = np.unique(np.round(np.geomspace(1, total, self.log_points)).astype(int))
            return np.isin(points, chosen)
        return points % self.every == 0


def parse_epoch_schedule(spec: str, epochs: int | None) -> tuple[int, ...]:
    """Checkpoint epochs from ``"2,30"`` (epoch 0 = before training), ``"every:10"`` or ``"log:6"``.

    The last two need the run's length ``epochs``.
    """
    from batchlab.errors import BatchlabError
    from batchlab.parsing import parse_ints

    kind, _, value = spec.partition(":")
    if kind in ("every", "log"):
        if epochs is None:
            raise BatchlabError(f"checkpoint schedule {spec!r} needs the number of epochs")
        count = parse_ints(value, f"'{kind}:' value", low=1)[0]
        schedule = Schedule("epoch", every=count) if kind == "every" else Schedule("epoch", log_points=count)
        return tuple(int(e) for e in np.flatnonzero(schedule.mask(epochs)) + 1)
    return tuple(sorted(set(parse_ints(spec, "checkpoint epochs"))))
