"""Few, shared programs give the same runs: against a reference written as one scan per epoch
(the engine's earlier design), padded batch-size buckets against exact widths, and the plan's
cost model on both sides of its threshold."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batchlab import budget
from batchlab.api import prepare
from batchlab.engine import backends, buckets, programs
from batchlab.engine.epoch import EVAL_METRICS, EpochOrders, evaluate, evaluated
from batchlab.engine.gradients import Batch
from batchlab.engine.jax_backend import epoch_data, measuring_model, train_cohort
from batchlab.engine.programs import EpochShape, ProgramKey
from batchlab.engine.step import train_step
from batchlab.grid import group_cohorts
from batchlab.instruments import output_names, step_instruments

# XLA's defaults, as batchlab's programs compile without options (the suite's own flags turn the
# fusion emitters and LLVM's optimization off: conftest.py).
XLA_DEFAULTS = {"xla_cpu_use_fusion_emitters": True, "xla_backend_optimization_level": 3}
RECORDED = ("train_loss", "train_acc", "test_loss", "test_acc")  # EVAL_METRICS as a classification records them


def recorded(name: str) -> str:
    """A per-step output as a classification records it (the score is its accuracy)."""
    return "mb_acc" if name == "mb_score" else name


def _prepare(batch_size, **settings):
    defaults = dict(hidden=(16,), activation="relu", init="he_uniform", dropout=0.0, standardize=None,
                    test_fraction=0.2, label="label", epochs=2, lr=0.05, momentum=0.9, seeds=2)
    return prepare("digits", "mlp", batch_size=batch_size, **{**defaults, **settings})


def _one_scan_reference(configs, dataset, net):
    """Each run alone: every epoch one ``lax.scan`` of ``train_step`` over ``steps x B`` rows
    laid out in advance (the last partial batch padded and masked), then a full evaluation."""
    cfg = configs[0]
    n, b = dataset.n_train, cfg.batch_size
    steps = budget.steps_per_epoch(n, b, cfg.drop_last)
    data = epoch_data(dataset)
    measured = step_instruments(cfg.instruments)
    names = output_names(measured)
    key = ProgramKey.of(net, cfg, 1, data)
    start = programs.start_program(key).result()
    evaluate_all = programs.eval_program(key).result()

    @jax.jit
    def epoch(run, order):
        slots = steps * b
        index = jnp.concatenate([order, jnp.zeros(max(slots - n, 0), order.dtype)])[:slots]
        mask = (jnp.arange(slots) < n).astype(jnp.float32)
        step = partial(train_step, model=net, optimizer=cfg.optimizer, data=(data.x, data.y),
                       reduction=cfg.reduction, micro_batch=cfg.micro_batch, instruments=measured)

        def body(run, xs):
            batch, i = xs
            run, out = step(run, batch, i + 1)
            return run, jnp.stack([out[k] for k in names])

        run, per_step = jax.lax.scan(body, run, (Batch(index.reshape(steps, b), mask.reshape(steps, b)),
                                                 jnp.arange(steps)))
        metrics = evaluate(net, run.params, run.model_state, data)
        return run, per_step, jnp.stack([metrics[k] for k in EVAL_METRICS])

    histories, per_steps = [], []
    for c in configs:
        args = (programs.prng_key(c.init_seed)[None], programs.prng_key(c.dropout_seed)[None],
                np.array([c.optimizer.lr], np.float32), np.array([c.optimizer.momentum], np.float32),
                np.array([c.optimizer.weight_decay], np.float32))
        runs = start(*args)
        run = jax.tree.map(lambda a: a[0], runs)
        orders = EpochOrders([c.data_seed], n, c.shuffle)
        rows, steps_out = [np.asarray(evaluate_all(runs.params, runs.model_state, data))[0]], []
        for _ in range(c.epochs):
            run, per_step, metrics = epoch(run, jnp.asarray(orders.next()[0]))
            rows.append(np.asarray(metrics))
            steps_out.append(np.asarray(per_step))
        histories.append(np.stack(rows))
        per_steps.append(np.concatenate(steps_out))
    return histories, per_steps


@pytest.mark.parametrize("batch_size, settings", [
    (32, {}),                                           # B does not divide N: a partial last batch
    (1437, {}),                                         # full batch
    (100, {"drop_last": True, "instruments": "standard"}),
    (64, {"dropout": 0.5, "optimizer": "adam", "momentum": 0.0}),
])
def test_engine_equals_one_scan_per_epoch(batch_size, settings):
    configs, dataset, net = _prepare(batch_size, **settings)
    histories, per_steps = _one_scan_reference(configs, dataset, measuring_model(net, configs[0])[0])
    results = train_cohort(configs, dataset, net)
    for result, history, per_step in zip(results, histories, per_steps):
        got = np.stack([result.history[k] for k in RECORDED], axis=1)
        np.testing.assert_allclose(got, history, rtol=1e-6, atol=1e-7)
        for j, name in enumerate(output_names(step_instruments(configs[0].instruments))):
            np.testing.assert_allclose(result.steps[recorded(name)], per_step[:, j], rtol=1e-5, atol=1e-7,
                                       err_msg=name)


@pytest.mark.parametrize("batch_size, width, settings", [
    (8, 32, {}),
    (50, 64, {"dropout": 0.5}),                         # dropout masks are drawn per row, so padding keeps them
    (40, 48, {"instruments": "full"}),                  # the noise halves take alternate rows: padding joins neither
    (24, 40, {"micro_batch": 16}),
])
def test_a_padded_program_trains_exactly_like_an_exact_one(batch_size, width, settings):
    configs, dataset, net = _prepare(batch_size, **settings)
    n = dataset.n_train
    exact = train_cohort(configs, dataset, net)
    padded = train_cohort(configs, dataset, net,
                          shapes={batch_size: EpochShape(width, budget.steps_per_epoch(n, batch_size) + 7, shared=True)})
    for a, b in zip(exact, padded):
        for key in RECORDED:
            np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-6, atol=1e-7, err_msg=key)
        for key in set(a.steps) - {"wall_time"}:
            np.testing.assert_allclose(b.steps[key], a.steps[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size, settings", [(1, {}), (64, {"dropout": 0.5, "instruments": "standard"})])
def test_an_epoch_program_that_evaluates_gives_the_same_runs_as_a_separate_evaluation(batch_size, settings):
    configs, dataset, net = _prepare(batch_size, epochs=3, **settings)
    steps = budget.steps_per_epoch(dataset.n_train, batch_size)
    apart = train_cohort(configs, dataset, net, shapes={batch_size: EpochShape(batch_size, steps, evaluates=False)})
    inside = train_cohort(configs, dataset, net, shapes={batch_size: EpochShape(batch_size, steps, evaluates=True)})
    for a, b in zip(apart, inside):
        for key in RECORDED:
            np.testing.assert_array_equal(a.history[key], b.history[key], err_msg=key)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
            np.testing.assert_array_equal(x, y)


def test_programs_evaluate_themselves_from_enough_epochs():
    _, dataset, net = _prepare(32)

    def evaluates(epochs, seeds, sizes="32"):
        cohorts = group_cohorts(_prepare(sizes, epochs=epochs, seeds=seeds)[0])
        return {b: shape.evaluates for plan in backends.plan(cohorts, dataset, net, compile_now=False)
                for b, shape in plan.items()}

    few = buckets.EVALUATES_FROM_EPOCHS - 1
    assert evaluates(few, seeds=1) == {32: False}
    assert evaluates(few, seeds=3) == {32: False}  # seeds share the program's epochs
    assert evaluates(buckets.EVALUATES_FROM_EPOCHS, seeds=1) == {32: True}
    # two cohorts of one program (they differ in epochs only): their epochs add up
    half = buckets.EVALUATES_FROM_EPOCHS // 2
    cohorts = [_prepare("32", epochs=e, seeds=1)[0] for e in (half, buckets.EVALUATES_FROM_EPOCHS - half)]
    assert [shape.evaluates for plan in backends.plan(cohorts, dataset, net, compile_now=False)
            for shape in plan.values()] == [True, True]


def test_one_program_serves_several_batch_sizes():
    configs, dataset, net = _prepare("2,4,8", epochs=1, seeds=1)
    cohorts = group_cohorts(configs)
    n = dataset.n_train
    shapes = backends.plan(cohorts, dataset, net, compile_now=False)
    # 1 epoch of one run: padding costs far less than a compilation, so all three share width 8,
    # with a buffer for the most steps (B=2).
    assert [plan[b] for plan, b in zip(shapes, (2, 4, 8))] == [EpochShape(8, budget.steps_per_epoch(n, 2), shared=True, evaluates=False)] * 3
    before = {key for key in programs.QUEUE._programs if key[0] == "epoch"}
    results = [r for cohort, shape in zip(cohorts, shapes) for r in train_cohort(cohort, dataset, net, shapes=shape)]
    assert len({key for key in programs.QUEUE._programs if key[0] == "epoch"} - before) <= 1
    for result, b in zip(results, (2, 4, 8)):
        assert result.history["step"][-1] == budget.steps_per_epoch(n, b)
        assert result.history["samples_seen"][-1] == n


def test_padding_only_where_it_costs_less_than_a_compilation(monkeypatch):
    _, dataset, net = _prepare(32)
    data = epoch_data(dataset)
    flops = buckets.flops_per_row(net, data)
    n = dataset.n_train

    def widths(sizes, epochs, seeds, model=net):
        configs = _prepare(sizes, epochs=epochs, seeds=seeds)[0]
        cohorts = group_cohorts(configs)
        planned = backends.plan(cohorts, dataset, model, compile_now=False)
        return {b: shape.width for plan in planned for b, shape in plan.items()}

    # B=40 joins B=64's program while runs x updates x 24 padded rows x flops stays under COMPILE_FLOPS.
    updates = budget.steps_per_epoch(n, 40)
    cheap = int(buckets.COMPILE_FLOPS // (updates * 24 * flops))  # epochs x seeds that still pay
    assert cheap >= 2
    assert widths("40,64", epochs=cheap, seeds=1) == {40: 64, 64: 64}
    assert widths("40,64", epochs=cheap + 1, seeds=1) == {40: 40, 64: 64}
    assert widths("40,64", epochs=1, seeds=cheap + 1) == {40: 40, 64: 64}  # runs multiply the cost
    assert widths("40", epochs=1, seeds=1) == {40: 40}  # alone, nothing to share: never padded
    # A model whose rows interact (batch statistics) is never padded.
    assert widths("40,64", epochs=1, seeds=1, model=net._replace(rowwise=False)) == {40: 40, 64: 64}


def test_a_resumed_command_trains_each_run_with_the_program_of_the_whole_grid(tmp_path):
    """Padding changes float rounding: a run must get the program the whole grid plans for it,
    whichever runs are already stored."""
    import batchlab

    settings = dict(batch_size="4,8,16", epochs=2, lr=0.05, momentum=0.9, seeds=1, hidden=(16,))
    whole = batchlab.train("digits", "mlp", db=tmp_path / "a.db", **settings)
    batchlab.train("digits", "mlp", db=tmp_path / "b.db", **{**settings, "batch_size": 16})
    resumed = batchlab.train("digits", "mlp", db=tmp_path / "b.db", **settings)  # B=16 stored: 4 and 8 train
    assert len(resumed.skipped) == 1
    for a, b in zip(whole.runs, resumed.runs):
        if a.config.batch_size != 16:
            np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
            np.testing.assert_array_equal(a.steps["mb_loss"], b.steps["mb_loss"])


def test_flops_per_row_grow_with_the_model():
    _, dataset, small = _prepare(32)
    _, _, big = _prepare(32, hidden=(512, 512))
    data = epoch_data(dataset)
    assert 0 < buckets.flops_per_row(small, data) < buckets.flops_per_row(big, data)


@pytest.mark.parametrize("model, settings", [
    ("mlp", {"init": "he_uniform", "instruments": "full"}),
    ("mlp", {"init": "he_normal", "hidden": (32, 16), "optimizer": "adam", "momentum": 0.0}),
    ("mlp", {"init": "glorot_normal", "dropout": 0.3, "nesterov": True}),
    ("logreg", {"init": "glorot_uniform"}),
    ("cnn", {"init": "he_normal"}),
])
def test_start_and_evaluation_programs_compute_the_same_bits_with_their_faster_options(model, settings):
    """``START_OPTIONS`` and ``EVAL_OPTIONS`` compile faster; the initial states and the
    metrics must be XLA's defaults', bit for bit, or every stored run would change."""
    defaults = dict(hidden=(16,), activation="relu", dropout=0.0, standardize=None, test_fraction=0.2,
                    label="label", epochs=1, lr="0.05,0.2", momentum=0.9, seeds=3, batch_size=32)
    configs, dataset, net = prepare("digits", model, **{**defaults, **settings})
    cfg = configs[0]
    net, _ = measuring_model(net, cfg)
    args = (np.stack([programs.prng_key(c.init_seed) for c in configs]),
            np.stack([programs.prng_key(c.dropout_seed) for c in configs]),
            np.array([c.optimizer.lr for c in configs], np.float32),
            np.array([c.optimizer.momentum for c in configs], np.float32),
            np.array([c.optimizer.weight_decay for c in configs], np.float32))
    with jax.threefry_partitionable(False):  # as programs._build lowers it
        lowered = jax.jit(programs._start_function(net, cfg.optimizer, cfg.instruments)).lower(
            *programs._start_specs(len(configs)))
    full = lowered.compile(compiler_options=XLA_DEFAULTS)(*args)
    quick = lowered.compile(compiler_options=programs.START_OPTIONS)(*args)
    assert len(jax.tree.leaves(full)) == len(jax.tree.leaves(quick)) > 4
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(quick)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # The evaluation of other weights than the initial ones (logreg's start at zero).
    state = jax.tree.map(lambda a: a + 0.05 * np.cos(np.arange(a.size)).reshape(a.shape), full.params)
    data = epoch_data(dataset)
    evaluation = jax.jit(jax.vmap(partial(evaluated, model=net), in_axes=(0, 0, None))).lower(
        state, full.model_state, data)
    metrics = np.asarray(evaluation.compile(compiler_options=XLA_DEFAULTS)(state, full.model_state, data))
    np.testing.assert_array_equal(
        np.asarray(evaluation.compile(compiler_options=programs.EVAL_OPTIONS)(state, full.model_state, data)), metrics)
    assert np.isfinite(metrics).all() and len(np.unique(metrics)) > 4
