"""Which epoch program each batch size trains with: one program of ``width`` rows serves
several batch sizes (the extra rows masked) where padding costs less than compiling another.

A plan is made over a command's *whole* grid, runs already stored included: padding changes
float rounding, so a resumed command must train each run with the program it would have had.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from batchlab import budget
from batchlab.config import RunConfig
from batchlab.engine import saved_programs
from batchlab.engine.epoch import EpochData
from batchlab.engine.programs import EpochShape, ProgramKey
from batchlab.models.base import Model
from batchlab.models.losses import masked_loss_sum

# What one more compiled program costs, in flops of padded rows: a digits-MLP epoch program
# compiles in 0.5-0.7 s cold on this 2-core CPU, where padded rows of small-batch steps ran
# at 10-40 GFLOP/s (digits and blobs MLPs, widths 8-512, measured per step); at the low end
# 0.5 s is 5 GFLOP. A constant rather than a timing, so a grid always gets the same programs.
COMPILE_FLOPS = 5e9
# An epoch program that also evaluates saves 0.6-0.75 ms per epoch (one program run instead
# of two; blobs MLP, 16 runs: 200 epochs train in 0.6 s instead of 0.75 s) and costs about 0.2 s
# more to compile (digits/blobs MLPs, this CPU), paid once: its compiled program is kept on
# disk. So programs that run this many epochs in a command evaluate themselves, although the
# first (cold) run of the 18-run 200-epoch train is then 0.5 s slower. Either way the numbers
# are the same, bit for bit.
EVALUATES_FROM_EPOCHS = 100
# Per-step output buffers of a bucket are runs x max_steps x outputs floats; padding is not
# chosen where that would pass this many bytes.
BUFFER_LIMIT = 64 * 2 ** 20

Plan = dict[ProgramKey, dict[int, EpochShape]]


def cohort_sizes(cfg: RunConfig) -> list[int]:
    """The batch sizes a run uses, first the initial one, then those its phases switch to."""
    return list(dict.fromkeys([cfg.batch_size] + [p.batch_size for p in cfg.phases if p.batch_size]))


def exact_shapes(cfg: RunConfig, n: int) -> dict[int, EpochShape]:
    """One program per batch size, each exactly as wide as its batches."""
    return {b: EpochShape(b, budget.steps_per_epoch(n, b, cfg.drop_last)) for b in cohort_sizes(cfg)}


def plan_shapes(cohorts: Sequence[Sequence[RunConfig]], models: Sequence[Model], data: EpochData) -> Plan:
    """Which program each batch size trains with, for a command's whole grid (``models[i]``:
    the model cohort i trains), by program group (:func:`shapes_for` reads it).

    Cohorts whose programs differ only in batch size form a group. Going from a group's
    largest batch size down, a smaller B joins the current program (padded to its width,
    the extra rows masked) when the padding's arithmetic costs less than the compilation it
    saves:

        runs x updates at B x (width - B) x flops per row  <  COMPILE_FLOPS

    (flops per row from XLA's cost analysis of one row's gradient). Only models whose rows
    do not interact (``Model.rowwise``: no batch statistics) are padded. A program of one
    batch size evaluates its runs itself when it runs at least ``EVALUATES_FROM_EPOCHS``
    epochs over the grid (same numbers either way).
    """
    n = data.n_train
    work: dict[ProgramKey, dict[int, int]] = {}  # group -> {B: runs x updates}
    calls: dict[ProgramKey, dict[int, int]] = {}  # group -> {B: epochs run}
    for cohort, model in zip(cohorts, models):
        key = ProgramKey.of(model, cohort[0], len(cohort), data)
        cfg, sizes, epochs_at = cohort[0], work.setdefault(key, {}), calls.setdefault(key, {})
        for b in cohort_sizes(cfg):
            epochs = sum(1 for e in range(1, cfg.epochs + 1) if cfg.batch_size_at(e) == b)
            sizes[b] = sizes.get(b, 0) + epochs * budget.steps_per_epoch(n, b, cfg.drop_last) * len(cohort)
            epochs_at[b] = epochs_at.get(b, 0) + epochs
    return {key: _buckets(sizes, calls[key], key, data) for key, sizes in work.items()}


def _buckets(work: dict[int, int], epochs: dict[int, int], key: ProgramKey, data: EpochData
             ) -> dict[int, EpochShape]:
    """The program shape of each of one group's batch sizes, given their work (runs x updates)
    and the epochs they run."""
    n = data.n_train
    steps = {b: budget.steps_per_epoch(n, b, False) for b in work}
    if len(work) == 1 or not key.model.rowwise or key.devices > 1:  # over devices: B / D rows each, exactly
        return {b: EpochShape(b, steps[b], evaluates=epochs[b] >= EVALUATES_FROM_EPOCHS) for b in work}
    flops = flops_per_row(key.model, data)
    buckets: list[list[int]] = []
    for b in sorted(work, reverse=True):
        if buckets:
            width = buckets[-1][0]
            fits = key.runs * steps[b] * 4 * 16 <= BUFFER_LIMIT  # runs x steps x a generous 16 float32 outputs
            if fits and work[b] * (width - b) * flops < COMPILE_FLOPS:
                buckets[-1].append(b)
                continue
        buckets.append([b])
    shared = {b: len(bucket) > 1 for bucket in buckets for b in bucket}
    return {b: EpochShape(bucket[0], max(steps[s] for s in bucket), shared[b],
                          evaluates=not shared[b] and epochs[b] >= EVALUATES_FROM_EPOCHS)
            for bucket in buckets for b in bucket}


def shapes_for(plan: Plan, key: ProgramKey, cfg: RunConfig, data: EpochData) -> dict[int, EpochShape]:
    """The planned shapes of a cohort's batch sizes (program group ``key``, runs like ``cfg``);
    exact ones where it was not planned (a planned program of one batch size has the exact
    shape, whether it evaluates planned)."""
    planned = plan.get(key, {})
    exact = exact_shapes(cfg, data.n_train)
    return {b: (planned[b] if planned[b].shared else shape._replace(evaluates=planned[b].evaluates))
            if b in planned else shape for b, shape in exact.items()}


_flops_cache: dict[tuple, float] = {}


def flops_per_row(model: Model, data: EpochData) -> float:
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

        from batchlab.models import description

        made_of = description(model)  # kept on disk: a lowering takes ~0.2 s
        _flops_cache[key] = flops() if made_of is None else saved_programs.number(("flops per row", made_of) + key[1:],
                                                                                   flops)
    return _flops_cache[key]
