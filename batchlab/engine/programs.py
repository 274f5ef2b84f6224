"""What a compiled program is: the *start*, *evaluation* and *epoch* programs of a cohort.

A cohort needs a start program (initial states of its runs), an evaluation program (full-pass
metrics) and one epoch program per batch-size bucket (``EpochShape``, planned in
``engine/buckets.py``). None depends on the number of epochs or of steps per epoch (the
epoch loop takes them as values), so one evaluation program serves every cohort with the same
model, optimizer kind, instruments and number of runs, whatever their batch sizes, and one
start program (of one run, run once a run) every cohort of the model, optimizer kind and
instruments. Each is built once per process, compiled ahead in the background
(``engine/compile_queue.py``), kept on disk (``engine/saved_programs.py``) and in JAX's
persistent cache (``runtime.configure_cache``).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from batchlab import profiling
from batchlab.config import OptimizerConfig, RunConfig
from batchlab.engine import saved_programs
from batchlab.engine.compile_queue import QUEUE
from batchlab.engine.epoch import EpochData, evaluated, run_epoch
from batchlab.engine.optim import make_optimizer
from batchlab.engine.step import RunState, start_measures
from batchlab.instruments import step_instruments
from batchlab.models import description
from batchlab.models.base import Model
from batchlab.runtime import configure_cache

# Start and evaluation programs compile with XLA's older CPU code generation (no fusion
# emitters): same bits, half the compile time (a digits CNN: start 0.38 -> 0.22 s, evaluation
# 0.72 -> 0.34 s; the MLP 0.26 -> 0.14 s), the same run time (evaluation of 8 digits MLPs 1.82
# vs 1.76 ms, 2 CNNs 168 vs 161 ms; measured on this 2-core CPU). A start program runs once a
# run, mostly the random draws of the initial weights, whose loops also compile faster at LLVM
# level 1 with the same bits. tests/test_programs.py checks both on the built-in models and
# inits. Epoch programs keep XLA's defaults: either option changes their float results (in the
# last bits) and the fusion emitters' code runs faster. On other devices (not measured) XLA's
# defaults stay.
START_OPTIONS = {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}
EVAL_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


class EpochShape(NamedTuple):
    """What shapes an epoch program: update slots per step, rows of the per-step buffer,
    whether it serves several batch sizes (B and the step count then come as values, and a
    loop of that many steps runs; an unshared program scans its fixed steps, which is up to
    a third faster per step here), and whether it evaluates the runs after the epoch itself
    (``run_epoch``; ``buckets.EVALUATES_FROM_EPOCHS``)."""

    width: int
    max_steps: int
    shared: bool = False
    evaluates: bool = True


class DataShape(NamedTuple):
    """The data as a program sees it: shapes and dtypes of all rows, and how many train."""

    x: tuple[int, ...]
    x_dtype: str
    y: tuple[int, ...]
    y_dtype: str
    n_train: int

    @classmethod
    def of(cls, data: EpochData) -> "DataShape":
        return cls(data.x.shape, str(data.x.dtype), data.y.shape, str(data.y.dtype), data.n_train)


class ProgramKey(NamedTuple):
    """What a cohort's start and evaluation programs depend on (an epoch program adds its shape)."""

    model: Model
    optimizer: OptimizerConfig  # its program kind (``OptimizerConfig.program_kind``)
    instruments: tuple[str, ...]
    reduction: str
    micro_batch: int | None
    runs: int
    data: DataShape | None  # None for a start program (it reads no data)
    devices: int = 1  # > 1: every program runs on a mesh of that many devices (``gradients.device_mesh``)

    @classmethod
    def of(cls, model: Model, cfg: RunConfig, runs: int, data: EpochData) -> "ProgramKey":
        return cls(model, cfg.optimizer.program_kind(), cfg.instruments, cfg.reduction, cfg.micro_batch, runs,
                   DataShape.of(data), cfg.devices)

    def described(self) -> tuple | None:
        """The key in plain values (the model as what it is made of), to find its programs on
        disk; None for a model or an instrument given as code (their code is not in the
        environment that names the folder of saved programs), or for programs over several devices
        (an executable is tied to its devices; JAX's own persistent cache still keeps them)."""
        made_of = description(self.model)
        if made_of is None or self.devices > 1 or any(not ins.update.__module__.startswith("batchlab.")
                                  for ins in step_instruments(self.instruments)):
            return None
        return self._replace(model=made_of)


def prng_key(seed: int) -> np.ndarray:
    """``jax.random.PRNGKey(seed)`` built with NumPy (no compiled op): [high 32 bits, low 32 bits]."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


def _start_function(model: Model, optimizer: OptimizerConfig, instruments: tuple[str, ...]):
    """Initial states of all runs (each with its own seeds and hyperparameters), vmapped."""
    measured = step_instruments(instruments)
    decays = optimizer.weight_decay != 0

    def start_one(init_key, dropout_key, lr, momentum, weight_decay):
        params, model_state = model.init(init_key)
        opt_state = make_optimizer(optimizer, lr, momentum, weight_decay if decays else None).init(params)
        return RunState(params, model_state, opt_state, lr, momentum, jnp.int32(0), jnp.int32(-1), dropout_key,
                        weight_decay=weight_decay if decays else None, measures=start_measures(measured, params))

    return jax.vmap(start_one)


def _start_specs(runs: int) -> tuple:
    keys = jax.ShapeDtypeStruct((runs, 2), jnp.uint32)
    rates = jax.ShapeDtypeStruct((runs,), jnp.float32)
    return keys, keys, rates, rates, rates


def _data_spec(data: DataShape) -> EpochData:
    return EpochData(jax.ShapeDtypeStruct(data.x, data.x_dtype), jax.ShapeDtypeStruct(data.y, data.y_dtype),
                     data.n_train)


def replicated(devices: int):
    """Every array whole on each of ``devices`` devices (None: one device, JAX's default)."""
    if devices == 1:
        return None
    from jax.sharding import NamedSharding, PartitionSpec

    from batchlab.engine.gradients import device_mesh

    return NamedSharding(device_mesh(devices), PartitionSpec())


def _build(function, specs, described: tuple | None = None, options: dict | None = None, devices: int = 1):
    """Trace and compile ``function`` for the argument shapes ``specs()`` (in whichever
    thread runs it; ``options``: XLA's), or load it from disk where ``described`` says what
    it is (``engine/saved_programs.py``; None: never kept). Over ``devices`` > 1, arguments
    and results are replicated on each device (data parallel: only the batch's rows are split,
    inside the step)."""
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
        with QUEUE.tracing, profiling.phase("tracing"):
            every = replicated(devices)
            jitted = jax.jit(function) if every is None else jax.jit(function, in_shardings=every, out_shardings=every)
            lowered = jitted.lower(*arguments)
        with profiling.phase("compilation"):
            compiled, new = saved_programs.compile_lowered(lowered, options)
    if described is not None and new:
        saved_programs.save(described, compiled)
    return compiled


def _on_cpu(options: dict) -> dict | None:
    """``options`` on a CPU (where they were measured and tested), XLA's defaults elsewhere."""
    return options if jax.default_backend() == "cpu" else None


def start_program(key: ProgramKey):
    """The (future) compiled start program of *one* run: (init key, dropout key, lr, momentum,
    weight decay), each with a leading axis of 1 -> that run's initial :class:`RunState` (a
    leading axis of 1). One program serves every cohort of a model, optimizer kind and
    instruments, whatever its number of runs or its data (:func:`start_states` calls it once a
    run): start programs had been a fifth of the compilation of a cold test suite, one per
    cohort size. Each run's draws are its own keys', so its state is the same bits either way."""
    one = key._replace(runs=1, data=None)
    described = one.described()
    return QUEUE.submit(("start", one), lambda: _build(
        _start_function(one.model, one.optimizer, one.instruments), lambda: _start_specs(1),
        described and ("start", described), _on_cpu(START_OPTIONS), one.devices))


def start_states(start, configs: list[RunConfig]) -> RunState:
    """The cohort's initial states: the compiled ``start`` program run for each config, stacked
    on the host (NumPy: stacking device arrays would compile a program per shape)."""
    parts = [start(prng_key(c.init_seed)[None], prng_key(c.dropout_seed)[None],
                   *(np.array([v], np.float32) for v in (c.optimizer.lr, c.optimizer.momentum,
                                                          c.optimizer.weight_decay)))
             for c in configs]
    return jax.tree.map(lambda *leaves: np.concatenate([np.asarray(leaf) for leaf in leaves]), *parts)


_state_specs: dict[ProgramKey, object] = {}


def _state_spec(key: ProgramKey):
    """The runs' state as the start program returns it, as shapes: traced (once per kind of
    start program), not compiled, so the other programs of a cohort compile side by side with
    its start program, not after it."""
    with jax.threefry_partitionable(False), QUEUE.tracing:
        if key not in _state_specs:
            with profiling.phase("tracing"):
                start = _start_function(key.model, key.optimizer, key.instruments)
                _state_specs[key] = jax.eval_shape(start, *_start_specs(key.runs))
        return _state_specs[key]


def eval_program(key: ProgramKey):
    """The (future) compiled evaluation of the runs: (params, model state, data) -> metrics
    (``epoch.EVAL_METRICS``, one row per run)."""
    start_program(key)  # queued first: every cohort needs it first

    def specs() -> tuple:
        state = _state_spec(key)
        return state.params, state.model_state, _data_spec(key.data)

    function = jax.vmap(partial(evaluated, model=key.model), in_axes=(0, 0, None))
    described = key.described()
    return QUEUE.submit(("eval", key), lambda: _build(function, specs, described and ("eval", described),
                                                      _on_cpu(EVAL_OPTIONS), key.devices))


def epoch_program(key: ProgramKey, shape: EpochShape):
    """The (future) compiled epoch program of ``shape``: (state, active, orders, batch size,
    steps, updates before, data) -> ``epoch.EpochOutput``."""
    start_program(key)

    def specs() -> tuple:
        scalar = jax.ShapeDtypeStruct((), jnp.int32)
        return (_state_spec(key), jax.ShapeDtypeStruct((key.runs,), jnp.bool_),
                jax.ShapeDtypeStruct((key.runs, key.data.n_train), jnp.int32), scalar, scalar, scalar,
                _data_spec(key.data))

    function = jax.vmap(partial(run_epoch, model=key.model, optimizer=key.optimizer, width=shape.width,
                                max_steps=shape.max_steps, shared=shape.shared, evaluates=shape.evaluates,
                                reduction=key.reduction, micro_batch=key.micro_batch,
                                instruments=step_instruments(key.instruments), devices=key.devices),
                        in_axes=(0, 0, 0, None, None, None, None))
    described = key.described()
    return QUEUE.submit(("epoch", shape, key),
                        lambda: _build(function, specs, described and ("epoch", shape, described),
                                       devices=key.devices))


def compile_ahead(key: ProgramKey, shapes) -> None:
    """Queue the programs a cohort needs (its start, evaluation and epoch programs)."""
    eval_program(key)
    for shape in dict.fromkeys(shapes):
        epoch_program(key, shape)
