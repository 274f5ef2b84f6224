"""The lr-recovery study (Shen 1; Goyal et al.; Hoffer et al.) at quick size, checked against the
store, and the engine's phase switch checked against two separate trainings."""


import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from batchlab import budget
from batchlab.analysis import lr_recovery
from batchlab.api import prepare
from batchlab.analysis.findings import AGREES, DISAGREES, INCONCLUSIVE
from batchlab.engine import programs
from batchlab.engine.epoch import EVAL_METRICS, EpochData, EpochOrders
from batchlab.engine.jax_backend import train_cohort
from batchlab.engine.programs import EpochShape, ProgramKey
from batchlab.store import Store
from batchlab.studies import get_study
from helpers import quick_study

STUDY = get_study("lr-recovery")
QUICK = STUDY.settings(quick=True)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return quick_study("lr-recovery", tmp_path_factory)


@pytest.fixture(scope="module")
def stored(result):
    """Every stored run of the study as (config, history), read straight from the store."""
    _, db, _ = result
    with Store(db, create=False) as store:
        return [(r.config, r.history) for r in store.load(steps=False)]


def runs_where(stored, *, batch_size, lr, phased=False, warmup=False):
    return [(c, h) for c, h in stored if c.batch_size == batch_size and np.isclose(c.optimizer.lr, lr)
            and bool(c.phases) == phased and bool(c.optimizer.warmup_steps) == warmup]


def test_large_batch_gap_recomputed_from_the_store(result, stored):
    res, _, _ = result
    small = [h["test_acc"][-1] for _, h in runs_where(stored, batch_size=QUICK["small_batch"], lr=QUICK["lr"])]
    large = [h["test_acc"][-1] for _, h in runs_where(stored, batch_size=QUICK["large_batch"], lr=QUICK["lr"])]
    assert len(small) == len(large) == QUICK["seeds"] >= 2
    welch = stats.ttest_ind(large, small, equal_var=False).confidence_interval()
    row = res.tables["final"].set_index("role").loc["large"]
    assert row.vs_small == pytest.approx(np.mean(large) - np.mean(small), abs=1e-12)
    assert (row.vs_small_low, row.vs_small_high) == pytest.approx((welch.low, welch.high), abs=1e-9)
    gap = res.findings[0]
    assert f"difference {100 * (np.mean(large) - np.mean(small)):.3g} [" in gap.measured
    # The claim (Shen 1): at a fixed lr the larger batch ends lower; at quick size the gap is tens of points.
    assert gap.verdict == AGREES and welch.high < 0


def test_groups_use_the_scaling_rules(stored):
    ratio = QUICK["large_batch"] / QUICK["small_batch"]
    base = QUICK["lr"]
    for lr in (base, base * QUICK["boost"], base * np.sqrt(ratio)):
        assert len(runs_where(stored, batch_size=QUICK["large_batch"], lr=lr)) == QUICK["seeds"]
    linear = runs_where(stored, batch_size=QUICK["large_batch"], lr=base * ratio, warmup=True)
    assert len(linear) == QUICK["seeds"]
    # Warmup over warmup_epochs epochs of updates at the large batch (Goyal et al.).
    steps = budget.steps_per_epoch(1437, QUICK["large_batch"])  # digits: 1437 training rows
    assert {c.optimizer.warmup_steps for c, _ in linear} == {round(QUICK["warmup_epochs"] * steps)}


def test_switch_run_changes_batch_size_midway(stored):
    switch = runs_where(stored, batch_size=QUICK["large_batch"], lr=QUICK["lr"], phased=True)
    k = lr_recovery.switch_epoch(QUICK)
    assert len(switch) == QUICK["seeds"] and 0 < k < QUICK["epochs"]
    large, small = (budget.steps_per_epoch(1437, b) for b in (QUICK["large_batch"], QUICK["small_batch"]))
    for _, history in switch:
        assert list(np.diff(history["step"])) == [large] * k + [small] * (QUICK["epochs"] - k)
    # Before the switch it is the fixed-lr large-batch run (same seeds, init and data order).
    plain = {c.seed: h for c, h in runs_where(stored, batch_size=QUICK["large_batch"], lr=QUICK["lr"])}
    for cfg, history in switch:
        np.testing.assert_array_equal(history["test_acc"][: k + 1], plain[cfg.seed]["test_acc"][: k + 1])
        assert not np.array_equal(history["test_acc"][k + 1:], plain[cfg.seed]["test_acc"][k + 1:])


def test_recovery_is_a_non_inferiority_test():
    rng = np.random.default_rng(0)
    baseline = pd.Series(0.92 + 0.001 * rng.standard_normal(5))
    close = baseline - 0.005  # half a point lower: within a 1-point margin
    far = baseline - 0.02  # two points lower: beyond it
    assert lr_recovery.recovers(close, baseline, 0.01)[1] == AGREES
    assert lr_recovery.recovers(far, baseline, 0.01)[1] == DISAGREES
    diff, verdict = lr_recovery.recovers(baseline - 0.01, baseline, 0.01)  # exactly at the limit
    assert verdict == INCONCLUSIVE and diff.mean == pytest.approx(-0.01)


def test_findings_and_table(result):
    res, _, out = result
    assert len(res.findings) == 5
    assert all(f.verdict in (AGREES, DISAGREES, INCONCLUSIVE) for f in res.findings)
    final = res.tables["final"]
    assert list(final.role) == list(lr_recovery.ROLES)
    assert (final.seeds == QUICK["seeds"]).all()
    assert (final.test_acc_low < final.test_acc).all() and (final.test_acc < final.test_acc_high).all()
    text = (out / "findings.md").read_text()
    for label in lr_recovery.labels(QUICK).values():
        assert f"| {label} |" in text  # the final-accuracy table, one row per group


def test_files_written(result):
    res, _, out = result
    for spec in STUDY.figures:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{spec.name}{suffix}").stat().st_size > 500, spec.name
    curves = pd.read_csv(out / "test_accuracy_curves.csv")
    assert set(curves.group) == set(lr_recovery.labels(QUICK).values())
    assert curves.epoch.max() == QUICK["epochs"]


# ------------------------------------------------------------------ phase switch = two trainings

def _epoch_program(net, cfg, batch_size: int, n: int, runs: int, data):
    """A program for epochs at ``batch_size`` alone, called with that batch size and its steps."""
    steps = budget.steps_per_epoch(n, batch_size)
    program = programs.epoch_program(ProgramKey.of(net, cfg, runs, data), EpochShape(batch_size, steps)).result()
    return lambda state, active, order, data: program(state, active, order, np.int32(batch_size),
                                                      np.int32(steps), np.int32(0), data)  # (state, per step, metrics)


def _train(runs, program, orders, data, epochs: int):
    """``epochs`` epochs of ``program`` from state ``runs``; returns the state and each epoch's metrics."""
    active = np.ones(len(orders.generators), bool)
    metrics = []
    for _ in range(epochs):
        runs, _, m = program(runs, active, orders.next(), data)
        metrics.append(np.asarray(m))
    return runs, metrics


def _orders_from(seeds, n: int, epoch: int) -> EpochOrders:
    """The data order of a run that starts at ``epoch``: epoch e uses the e-th permutation of
    ``Generator(PCG64(data_seed))``, so skip the ``epoch`` permutations already used."""
    orders = EpochOrders(seeds, n, "every-epoch")
    for _ in range(epoch):
        orders.next()
    return orders


def test_phase_switch_equals_two_trainings_from_the_saved_state():
    big, small, k, epochs = 256, 32, 2, 4
    configs, dataset, net = prepare(
        "digits", "mlp", hidden=(32,), activation="relu", init="he_uniform", dropout=0.0, standardize=None,
        test_fraction=0.2, label="label", batch_size=big, epochs=epochs, lr=0.05, momentum=0.9, seeds=2,
        warmup_epochs=1, phases=[(k, small, None)])
    phased = train_cohort(configs, dataset, net)

    cfg, n = configs[0], dataset.n_train
    seeds = [c.data_seed for c in configs]
    data = EpochData.from_dataset(dataset)
    key = ProgramKey.of(net, cfg, len(configs), data)
    runs = programs.start_states(programs.start_program(key).result(), configs)
    evaluate = programs.eval_program(key).result()
    metrics0 = dict(zip(EVAL_METRICS, np.asarray(evaluate(runs.params, runs.model_state, data)).T))
    # Training 1: k epochs at the large batch; its whole state (params, momentum, update count) saved to the host.
    first = _train(runs, _epoch_program(net, cfg, big, n, len(configs), data), _orders_from(seeds, n, 0), data, k)
    saved = jax.tree.map(np.asarray, first[0])
    # Training 2: a new program at the small batch, continued from the saved state.
    program = _epoch_program(net, cfg, small, n, len(configs), data)
    final, later = _train(jax.tree.map(jnp.asarray, saved), program, _orders_from(seeds, n, k), data, epochs - k)
    reference = np.stack([np.stack([np.asarray(metrics0[m]) for m in EVAL_METRICS], axis=1)] + first[1] + later)

    for i, run in enumerate(phased):
        got = np.stack([run.history[m] for m in ("train_loss", "train_acc", "test_loss", "test_acc")], axis=1)
        np.testing.assert_allclose(got, reference[:, i], rtol=1e-6, atol=1e-6)
        for mine, ref in zip(jax.tree.leaves(run.params), jax.tree.leaves(final.params)):
            np.testing.assert_allclose(mine, np.asarray(ref[i]), rtol=1e-6, atol=1e-6)
    # The comparison can tell: continuing with a fresh optimizer state (momentum and warmup
    # reset) from the same parameters ends elsewhere.
    fresh = saved._replace(opt_state=jax.tree.map(np.zeros_like, saved.opt_state))
    reset, _ = _train(jax.tree.map(jnp.asarray, fresh), program, _orders_from(seeds, n, k), data, epochs - k)
    gap = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(reset.params), jax.tree.leaves(final.params)))
    assert gap > 1e-3
