"""The compiled programs of the cohorts of a command: few, shared, and compiled ahead.

A cohort needs a *start* program (initial states of its runs), an *evaluation* program
(full-pass metrics) and one *epoch* program per batch-size bucket (``EpochShape``). None
depends on the number of epochs or of steps per epoch (the epoch loop takes them as
values), so:

- one start and one evaluation program serve every cohort with the same model, optimizer
  kind, instruments and number of runs, whatever their batch sizes;
- one epoch program of ``width`` rows serves several batch sizes (:func:`plan_shapes`; the
  extra rows are masked) where padding costs less than compiling another program;
- each program is compiled once per process (``_programs``), queued for a background thread
  before the first cohort trains (:func:`compile_ahead`); a cohort whose programs are still
  queued builds the first queued program itself (:func:`ready_all`). Programs are traced one
  at a time in queue order (tracing holds the GIL) and compiled side by side (XLA's compiler
  releases it), so compilation overlaps training and other compilations. JAX's persistent cache
  (``runtime.configure_cache``) keeps them across commands.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from batchlab import budget, profiling
from batchlab.config import RunConfig
from batchlab.engine import saved_programs
from batchlab.engine.epoch import EpochData, evaluated, run_epoch
from batchlab.engine.optim import make_optimizer
from batchlab.engine.runtime import configure_cache
from batchlab.engine.step import RunState, masked_loss_sum
from batchlab.engine.step_stats import NOISE_STATE_SIZE, uses_noise
from batchlab.models import description
from batchlab.models.base import Model

# What one more compiled program costs, in flops of padded rows: a digits-MLP epoch program
# compiles in 0.5-0.7 s cold on this 2-core CPU, where padded rows of small-batch steps ran
# at 10-40 GFLOP/s (digits and blobs MLPs, widths 8-512, measured per step); at the low end
# 0.5 s is 5 GFLOP. A constant rather than a timing, so a grid always gets the same programs
# (see ``plan_shapes``).
COMPILE_FLOPS = 5e9
# An epoch program that also evaluates saves 0.6-0.75 ms per epoch (one program run instead
# of two; blobs MLP, 16 runs: 200 epochs train in 0.6 s instead of 0.75 s) and costs about 0.2 s
# more to compile (digits/blobs MLPs, this CPU), paid once: its compiled program is kept on
# disk. So programs that run this many epochs in a command evaluate themselves, although the
# first (cold) run of the 18-run 200-epoch train is then 0.5 s slower. Either way the numbers
# are the same, bit for bit.
EVALUATES_FROM_EPOCHS = 100
# A start program runs once per cohort, and most of it is the random draws of the initial
# weights, whose loops LLVM's full optimization takes 0.58 s to compile (a blobs MLP, 6 runs);
# at level 1 it takes 0.29 s and computes the same bits (tests/test_programs.py checks it on the
# built-in models and inits). Epoch programs keep full optimization: level 1 changes
# their float results. On other devices (not measured) XLA's defaults stay.
START_OPTIONS = {"xla_backend_optimization_level": 1}
# Per-step output buffers of a bucket are runs x max_steps x outputs floats; padding is not
# chosen where that would pass this many bytes.
BUFFER_LIMIT = 64 * 2 ** 20


class EpochShape(NamedTuple):
    """What shapes an epoch program: update slots per step, rows of the per-step buffer,
    whether it serves several batch sizes (B and the step count then come as values, and a
    loop of that many steps runs; an unshared program scans its fixed steps, which is up to
    a third faster per step here), and whether it evaluates the runs after the epoch itself
    (``run_epoch``; only unshared programs that run at least ``EVALUATES_FROM_EPOCHS``)."""

    width: int
    max_steps: int
    shared: bool = False
    evaluates: bool = True


def prng_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)`` built with NumPy (no compiled op): [high 32 bits, low 32 bits]."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


def _start_function(model: Model, opt_cfg, instruments: tuple[str, ...]):
    """Initial states of all runs (each with its own seeds and hyperparameters), vmapped."""

    def start_one(init_key, dropout_key, lr, momentum):
        params, model_state = model.init(init_key)
        opt_state = make_optimizer(opt_cfg, lr, momentum).init(params)
        run = RunState(params, model_state, opt_state, lr, momentum, jnp.int32(0), jnp.int32(-1), dropout_key,
                       init_params=params if "dist_init" in instruments else None,
                       noise_ema=jnp.zeros(NOISE_STATE_SIZE) if uses_noise(instruments) else None)
        return run

    return jax.vmap(start_one, in_axes=(0, 0, 0, 0))


def _epoch_function(model: Model, cfg: RunConfig, shape: EpochShape):
    return jax.vmap(partial(run_epoch, model=model, optimizer=cfg.optimizer, width=shape.width,
                            max_steps=shape.max_steps, shared=shape.shared, evaluates=shape.evaluates,
                            reduction=cfg.reduction,
                            micro_batch=cfg.micro_batch, instruments=cfg.instruments),
                    in_axes=(0, 0, 0, None, None, None))


def _data_spec(data: EpochData) -> EpochData:
    return EpochData(jax.ShapeDtypeStruct(data.x.shape, data.x.dtype),
                     jax.ShapeDtypeStruct(data.y.shape, data.y.dtype), data.n_train)


def _start_specs(runs: int) -> tuple:
    keys = jax.ShapeDtypeStruct((runs, 2), jnp.uint32)
    rates = jax.ShapeDtypeStruct((runs,), jnp.float32)
    return keys, keys, rates, rates


def _program_key(model: Model, cfg: RunConfig, runs: int, data: EpochData) -> tuple:
    """What a start program depends on (an epoch program adds its shape)."""
    return (model, cfg.optimizer.program_kind(), cfg.instruments, cfg.reduction, cfg.micro_batch, runs,
            data.x.shape, str(data.x.dtype), data.y.shape, str(data.y.dtype), data.n_train)


def _described(key: tuple) -> tuple | None:
    """A program ``key`` in plain values (the model as what it is made of), to find the
    program on disk; None for a model given as code."""
    model = next(part for part in key if isinstance(part, Model))
    made_of = description(model)
    return None if made_of is None else tuple(made_of if part is model else part for part in key)


_programs: dict[tuple, Future] = {}
_builds: dict[Future, tuple[tuple, Callable, int]] = {}  # queued programs: key, how to build, queue position
_replacements: dict[Future, Future] = {}  # a queued program taken out of the queue -> its build in a cohort's thread
_lock = threading.RLock()  # re-entrant: a done-callback may run in the thread that holds it


class _InOrder:
    """A lock whose waiters go in the order of the programs they build (the order they were
    queued in: the first cohort's first), whichever thread builds them."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._waiting: list[tuple[float, int]] = []
        self._tickets = itertools.count()
        self._busy = False

    def __enter__(self) -> None:
        entry = (getattr(_building, "order", math.inf), next(self._tickets))
        with self._turns:
            heapq.heappush(self._waiting, entry)
            try:
                self._turns.wait_for(lambda: not self._busy and self._waiting[0] == entry)
            except BaseException:  # Ctrl-C while waiting: leave the queue, so the next caller is not stuck
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._turns.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._busy = True

    def __exit__(self, *exc) -> None:
        with self._turns:
            self._busy = False
            self._turns.notify_all()


# Tracing is Python holding the GIL: several threads tracing at once only slow each other (and
# the cohorts that train meanwhile), so programs are traced one at a time, in the order they
# were queued (a cohort's programs before the next cohort's, so the first cohorts start first);
# XLA's compilation, which releases the GIL, still runs side by side.
_tracing = _InOrder()
_building = threading.local()  # the queue position of the program this thread builds
_queued = itertools.count()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    """Compilation threads: one core is left to training (one thread here), so compiling
    ahead never slows the cohort that trains meanwhile."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 1) - 1)),
                                   thread_name_prefix="batchlab-compile")
    return _pool


def ready_all(futures: Sequence[Future]) -> list:
    """The compiled programs of ``futures``. While some of them wait in the queue, this thread
    builds the first program of the queue (a cohort waiting for its programs adds a core to
    the compilation), which may be an earlier cohort's: programs are built in queue order
    whichever thread builds them, so the first cohorts (the longest: the smallest batch
    sizes) start training first. A thread never builds a later cohort's program meanwhile:
    its own cohort would then wait for that. Then the others are waited for, however they
    are built."""
    while True:
        with _lock:
            futures = [_replacements.get(future, future) for future in futures]
            if not any(future in _builds and not future.running() for future in futures):
                break
            first = min((future for future in _builds if not future.running()), key=lambda f: _builds[f][2])
            taken = _take(first)
        if taken is not None:
            _run(*taken)
    return [future.result() for future in futures]


def _take(queued: Future) -> tuple[Future, Callable, int] | None:
    """Take a queued program out of the compilation queue (call with the lock held); None if a
    compilation thread started it meanwhile."""
    key, build, order = _builds[queued]  # read first: cancelling runs the callback that forgets it
    if not queued.cancel():
        return None
    inline: Future = Future()
    inline.set_running_or_notify_cancel()
    _programs[key] = _replacements[queued] = inline
    return inline, build, order


def _run(inline: Future, build: Callable, order: int) -> None:
    """Build a program taken out of the queue; an error goes to whoever waits for it (Ctrl-C
    also stops this thread)."""
    try:
        inline.set_result(_in_order(order, build))
    except BaseException as exc:
        inline.set_exception(exc)
        if not isinstance(exc, Exception):
            raise


def _in_order(order: int, build: Callable):
    """Run ``build`` as the program at queue position ``order`` (its turn to trace)."""
    _building.order = order
    try:
        return build()
    finally:
        _building.order = math.inf


def _build(function, specs: Callable[[], tuple], described: tuple | None = None, options: dict | None = None):
    """Trace and compile ``function`` for the argument shapes ``specs()`` (in whichever
    thread runs it; ``options``: XLA's), or load it from disk where ``described`` says what
    it is (``engine/saved_programs.py``; None: a model given as code, never kept)."""
    configure_cache()
    if described is not None:
        with profiling.phase("loading programs"):
            compiled = saved_programs.load(described)
        if compiled is not None:
            return compiled
    # JAX's default "partitionable" threefry makes XLA's CPU compiler take up to 4x longer on
    # random draws of multi-dimensional shapes (weight inits); the classic stream is just as
    # reproducible and keeps the cold start short. It applies to batchlab's programs only.
    arguments = specs()  # before taking the tracing turn: the state's shapes take one themselves
    with jax.threefry_partitionable(False):
        with _tracing, profiling.phase("tracing"):
            lowered = jax.jit(function).lower(*arguments)
        with profiling.phase("compilation"):
            compiled, new = saved_programs.compile_lowered(lowered, options)
    if described is not None and new:
        saved_programs.save(described, compiled)
    return compiled


def _submit(key: tuple, build: Callable) -> Future:
    """The program under ``key``: held in this process, else built in a background thread."""
    with _lock:
        future = _programs.get(key)
        if future is None or future.cancelled():
            order = next(_queued)
            future = _programs[key] = _executor().submit(_in_order, order, build)
            _builds[future] = (key, build, order)
            future.add_done_callback(_forget)
    return future


def _forget(future: Future) -> None:
    with _lock:
        _builds.pop(future, None)


def _start_options() -> dict | None:
    """``START_OPTIONS`` on a CPU (where they were measured and tested), XLA's defaults elsewhere."""
    return START_OPTIONS if jax.default_backend() == "cpu" else None


def start_program(model: Model, cfg: RunConfig, runs: int, data: EpochData) -> Future:
    """The (future) compiled start program for ``runs`` runs of ``cfg``'s kind."""
    key = ("start",) + _program_key(model, cfg, runs, data)
    return _submit(key, lambda: _build(_start_function(model, cfg.optimizer, cfg.instruments),
                                       lambda: _start_specs(runs), _described(key), _start_options()))


_state_specs: dict[tuple, object] = {}


def _state_spec(model: Model, cfg: RunConfig, runs: int, data: EpochData):
    """The runs' state as the start program returns it, as shapes: traced (once per kind of
    start program), not compiled, so the other programs of a cohort compile side by side with
    its start program, not after it."""
    key = _program_key(model, cfg, runs, data)
    with jax.threefry_partitionable(False), _tracing:
        if key not in _state_specs:
            with profiling.phase("tracing"):
                start = _start_function(model, cfg.optimizer, cfg.instruments)
                _state_specs[key] = jax.eval_shape(start, *_start_specs(runs))
        return _state_specs[key]


def eval_program(model: Model, cfg: RunConfig, runs: int, data: EpochData) -> Future:
    """The (future) compiled evaluation of ``runs`` runs: (params, model state, data) -> metrics."""
    key = ("eval",) + _program_key(model, cfg, runs, data)
    start_program(model, cfg, runs, data)

    def specs() -> tuple:
        state = _state_spec(model, cfg, runs, data)
        return state.params, state.model_state, _data_spec(data)

    function = jax.vmap(partial(evaluated, model=model), in_axes=(0, 0, None))
    return _submit(key, lambda: _build(function, specs, _described(key)))


def epoch_program(model: Model, cfg: RunConfig, shape: EpochShape, runs: int, data: EpochData) -> Future:
    """The (future) compiled epoch program of ``shape`` for ``runs`` runs of ``cfg``'s kind."""
    key = ("epoch", shape) + _program_key(model, cfg, runs, data)
    start_program(model, cfg, runs, data)  # queued first: every cohort needs it first

    def specs() -> tuple:
        return (_state_spec(model, cfg, runs, data), jax.ShapeDtypeStruct((runs,), jnp.bool_),
                jax.ShapeDtypeStruct((runs, data.n_train), jnp.int32),
                jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32), _data_spec(data))

    def build():
        return _build(_epoch_function(model, cfg, shape), specs, _described(key))

    return _submit(key, build)


def cohort_sizes(cfg: RunConfig) -> list[int]:
    """The batch sizes a run uses, first the initial one, then those its phases switch to."""
    return list(dict.fromkeys([cfg.batch_size] + [p.batch_size for p in cfg.phases if p.batch_size]))


def exact_shapes(cfg: RunConfig, n: int) -> dict[int, EpochShape]:
    """One program per batch size, each exactly as wide as its batches."""
    return {b: EpochShape(b, budget.steps_per_epoch(n, b, cfg.drop_last)) for b in cohort_sizes(cfg)}


def plan_shapes(cohorts: Sequence[Sequence[RunConfig]], models: Sequence[Model], data: EpochData
                ) -> dict[tuple, dict[int, EpochShape]]:
    """Which program each batch size trains with, for a command's whole grid (``models[i]``:
    the model cohort i trains). Returns {program group: {B: shape}} for :func:`shapes_for`.

    Cohorts whose programs differ only in batch size form a group. Going from a group's
    largest batch size down, a smaller B joins the current program (padded to its width,
    the extra rows masked) when the padding's arithmetic costs less than the compilation it
    saves:

        runs x updates at B x (width - B) x flops per row  <  COMPILE_FLOPS

    (flops per row from XLA's cost analysis of one row's gradient). Only models whose rows
    do not interact (``Model.rowwise``: no batch statistics) are padded. Padding changes float
    rounding, so callers plan over the *whole* grid of a command, runs already stored
    included: a resumed sweep then trains each run with the program it would have had.
    A program of one batch size evaluates its runs itself when it runs at least
    ``EVALUATES_FROM_EPOCHS`` epochs over the grid (same numbers either way).
    """
    n = data.n_train
    keys = [_program_key(model, cohort[0], len(cohort), data) for cohort, model in zip(cohorts, models)]
    work: dict[tuple, dict[int, int]] = {}  # group -> {B: runs x updates}
    calls: dict[tuple, dict[int, int]] = {}  # group -> {B: epochs run}
    model_of: dict[tuple, Model] = {}
    for key, model, cohort in zip(keys, models, cohorts):
        cfg, sizes, epochs_at = cohort[0], work.setdefault(key, {}), calls.setdefault(key, {})
        model_of[key] = model
        for b in cohort_sizes(cfg):
            epochs = sum(1 for e in range(1, cfg.epochs + 1) if cfg.batch_size_at(e) == b)
            sizes[b] = sizes.get(b, 0) + epochs * budget.steps_per_epoch(n, b, cfg.drop_last) * len(cohort)
            epochs_at[b] = epochs_at.get(b, 0) + epochs
    return {key: _buckets(sizes, calls[key], model_of[key], data, runs=key[5]) for key, sizes in work.items()}


def _buckets(work: dict[int, int], epochs: dict[int, int], model: Model, data: EpochData, runs: int
             ) -> dict[int, EpochShape]:
    """The program shape of each of one group's batch sizes, given their work (runs x updates)
    and the epochs they run."""
    n = data.n_train
    steps = {b: budget.steps_per_epoch(n, b, False) for b in work}
    if len(work) == 1 or not model.rowwise:
        return {b: EpochShape(b, steps[b], evaluates=epochs[b] >= EVALUATES_FROM_EPOCHS) for b in work}
    flops = _flops_per_row(model, data)
    buckets: list[list[int]] = []
    for b in sorted(work, reverse=True):
        if buckets:
            width = buckets[-1][0]
            fits = runs * steps[b] * 4 * 16 <= BUFFER_LIMIT  # runs x steps x a generous 16 float32 outputs
            if fits and work[b] * (width - b) * flops < COMPILE_FLOPS:
                buckets[-1].append(b)
                continue
        buckets.append([b])
    shared = {b: len(bucket) > 1 for bucket in buckets for b in bucket}
    return {b: EpochShape(bucket[0], max(steps[s] for s in bucket), shared[b],
                          evaluates=not shared[b] and epochs[b] >= EVALUATES_FROM_EPOCHS)
            for bucket in buckets for b in bucket}


def shapes_for(plans: dict[tuple, dict[int, EpochShape]], model: Model, cohort: Sequence[RunConfig],
               data: EpochData) -> dict[int, EpochShape]:
    """The planned shapes of ``cohort``'s batch sizes; exact ones where it was not planned (a
    planned program of one batch size has the exact shape, whether it evaluates planned)."""
    planned = plans.get(_program_key(model, cohort[0], len(cohort), data), {})
    exact = exact_shapes(cohort[0], data.n_train)
    return {b: (planned[b] if planned[b].shared else shape._replace(evaluates=planned[b].evaluates))
            if b in planned else shape for b, shape in exact.items()}


def compile_ahead(model: Model, cfg: RunConfig, runs: int, data: EpochData, shapes: dict[int, EpochShape]) -> None:
    """Queue the programs a cohort (``runs`` runs of ``cfg``'s kind) needs."""
    eval_program(model, cfg, runs, data)
    for shape in dict.fromkeys(shapes.values()):
        epoch_program(model, cfg, shape, runs, data)


def cancel_pending() -> None:
    """Drop queued compilations that have not started (a command that stops early)."""
    with _lock:
        for key, future in list(_programs.items()):
            if future.cancel():
                del _programs[key]
                _builds.pop(future, None)


_flops_cache: dict[tuple, float] = {}


def _flops_per_row(model: Model, data: EpochData) -> float:
    """XLA's cost analysis of one row's loss gradient (forward and backward): deterministic
    for a model and data shape, and no compilation (the program is only lowered)."""
    key = (model, data.x.shape[1:], str(data.x.dtype), data.y.shape[1:], str(data.y.dtype))
    if key not in _flops_cache:
        def flops() -> float:
            def loss(params, state, x, y):
                # Evaluation mode: no dropout key is needed, and dropout's own flops are negligible.
                return masked_loss_sum(model, params, state, x, y, jnp.ones(1), train=False, key=None)[0]

            params, state = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
            row_x = jax.ShapeDtypeStruct((1,) + data.x.shape[1:], data.x.dtype)
            row_y = jax.ShapeDtypeStruct((1,) + data.y.shape[1:], data.y.dtype)
            cost = jax.jit(jax.grad(loss)).lower(params, state, row_x, row_y).cost_analysis() or {}
            return max(float(cost.get("flops", 0.0)), 1.0)

        described = _described(("flops per row",) + key)  # kept on disk: a lowering takes ~0.2 s
        _flops_cache[key] = flops() if described is None else saved_programs.number(described, flops)
    return _flops_cache[key]
