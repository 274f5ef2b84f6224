"""The generalization study (Keskar et al. 2017): gap, sharpness and their correlation vs batch size.

One quick run of the whole study (module fixture), checked against the store with plain
numpy; the sharpness measures checked against brute force on tiny problems.
"""

import itertools
import re

import batchlab  # noqa: F401  (first: it sets XLA's thread flags before JAX starts)
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from batchlab.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig
from batchlab.data.dataset import Dataset
from batchlab.instruments import hessian
from batchlab.models.mlp import mlp
from batchlab.analysis import generalization as gen
from batchlab.store import Store
from batchlab.studies import generalization as gen_study
from batchlab.instruments.checkpoint import Checkpoint
from batchlab.studies.gradient_noise import pool_rows
from helpers import quick_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return quick_study("generalization", tmp_path_factory)


def finding(result, start: str):
    matches = [f for f in result.findings if f.claim.startswith(start)]
    assert len(matches) == 1, [f.claim for f in result.findings]
    return matches[0]


def stored_runs(db) -> pd.DataFrame:
    """Per run, straight from the store: B, seed, final train/test accuracy."""
    with Store(db, create=False) as store:
        runs = store.load(steps=False)
    return pd.DataFrame([{"run_id": r.run_id, "batch_size": r.config.batch_size, "seed": r.config.seed,
                          "train_acc": r.history["train_acc"][-1], "test_acc": r.history["test_acc"][-1]}
                         for r in runs])


# ------------------------------------------------------------------ the study, against the store

def test_gap_trend_recomputed_from_the_store(study):
    result, db, _ = study
    runs = stored_runs(db)
    runs["gap"] = runs.train_acc - runs.test_acc  # the sign the study states: train minus test
    means = runs.groupby("batch_size").gap.mean()
    assert len(means) == len(result.settings["batch_sizes"]) and (runs.groupby("batch_size").size() >= 2).all()
    table = result.tables["by_batch"].set_index("batch_size")
    np.testing.assert_allclose(table.loc[means.index, "gap_acc"], means.to_numpy(), rtol=1e-12)
    slope = np.polyfit(np.log2(means.index.to_numpy(float)), means.to_numpy(), 1)[0]
    text = finding(result, "the generalization gap").measured
    reported = float(re.search(r"slope (\S+) \[", text).group(1)) / 100  # stated in percentage points
    assert reported == pytest.approx(slope, rel=2e-3, abs=1e-6)


def test_correlations_recomputed_from_the_store(study):
    result, db, _ = study
    runs = stored_runs(db).set_index("run_id")
    with Store(db, create=False) as store:
        measured = store.measurements("sharpness").set_index("run_id")
    assert set(measured.index) == set(runs.index)  # every run measured once, at its last epoch
    assert (measured.epoch == result.settings["epochs"]).all()
    runs = runs.join(measured[list(gen.MEASURES)]).assign(gap=runs.train_acc - runs.test_acc)
    fitted = runs.groupby("batch_size").train_acc.min() >= result.settings["fit_threshold"]
    if fitted.sum() >= 2:  # the batch sizes that fit the training set, else (quick size) all of them
        runs = runs[runs.batch_size.map(fitted)]
    means = runs.groupby("batch_size").mean(numeric_only=True)  # the batch size is the unit, not the run
    table = result.tables["correlations"].set_index("measure")
    for name in gen.MEASURES:
        rho = stats.spearmanr(means[name], means.gap).statistic
        exact = stats.permutation_test((means[name].to_numpy(), means.gap.to_numpy()),
                                       lambda x, y: stats.spearmanr(x, y).statistic, permutation_type="pairings",
                                       alternative="greater", n_resamples=np.inf)
        assert table.loc[name, "rho"] == pytest.approx(rho, abs=1e-9)
        assert table.loc[name, "p_greater"] == pytest.approx(exact.pvalue, abs=1e-9)
        claim = f"sharpness ({gen.NAMES[name]}) predicts the gap"
        assert f"means {rho:.2f}, exact permutation p = {exact.pvalue:.3f}" in finding(result, claim).measured


def test_sharpness_records_are_finite_and_positive(study):
    _, db, _ = study
    with Store(db, create=False) as store:
        measured = store.measurements("sharpness")
    assert (measured.lambda_max > 0).all() and (measured.hessian_trace > 0).all()
    # lambda_max is one of the Hessian's eigenvalues, the trace their sum; near a minimum (all
    # eigenvalues >= 0 up to noise) the largest cannot exceed the sum by more than the noise.
    assert (measured.lambda_max <= measured.hessian_trace + 4 * measured.hessian_trace_se).all()
    assert (measured.eps_sharpness >= 0).all()


def test_no_verdict_on_batch_sizes_that_did_not_fit_the_training_set(study):
    """At quick size (8 epochs) no batch size reaches 99% train accuracy: the gap, test-accuracy,
    sharpness and sweet-spot findings say so instead of giving a verdict."""
    result, db, _ = study
    runs = stored_runs(db)
    if (runs.groupby("batch_size").train_acc.min() >= result.settings["fit_threshold"]).sum() >= 2:
        pytest.skip("this run fitted the training set")
    for f in result.findings:
        assert f.verdict == "inconclusive" and "fit the training set" in f.reason, f


def test_files_written(study):
    result, _, out = study
    for spec in gen_study.STUDY.figures:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{spec.name}{suffix}").stat().st_size > 200, spec.name
    md = (out / "findings.md").read_text()
    assert md.count("- **") == len(result.findings) and "train accuracy minus test accuracy" in md
    runs = pd.read_csv(out / "sharpness_vs_gap.csv")
    assert len(runs) == len(result.settings["batch_sizes"]) * result.settings["seeds"]


# ------------------------------------------------------------------ findings logic on made-up tables

def made_up_tables(sharp_sign: float) -> dict:
    """Six seeds x five B, every one fitting the training set: the gap and test accuracy move with
    B; sharpness with the gap (``sharp_sign`` +1) or against it (-1)."""
    rng = np.random.default_rng(0)
    rows = []
    for b, seed in itertools.product((16, 64, 256, 1024, 4096), range(6)):
        gap = 0.1 + 0.05 * np.log2(b) + rng.normal(0, 0.01)
        test = {16: 0.6, 64: 0.7, 256: 0.65, 1024: 0.55, 4096: 0.5}[b] + rng.normal(0, 0.01)
        sharp = np.exp(sharp_sign * 3 * gap)
        rows.append({"run_id": f"{b}-{seed}", "group": "g", "batch_size": b, "seed": seed, "steps": 10,
                     "epochs_done": 10, "samples_seen": 10240, "train_acc": 0.995, "test_acc": test,
                     "gap_acc": gap, "lambda_max": sharp, "hessian_trace": 10 * sharp, "eps_sharpness": sharp})
    runs = pd.DataFrame(rows)
    table = gen.by_batch(runs, ("train_acc", "test_acc", "gap_acc", *gen.MEASURES))
    return {"runs": runs, "by_batch": table, "correlations": gen.correlations(runs, gen.MEASURES)}


@pytest.mark.parametrize("sign, verdict", [(1.0, "agrees"), (-1.0, "disagrees")])
def test_correlation_verdicts_follow_the_data(sign, verdict):
    tables = made_up_tables(sign)
    out = gen.findings(tables, gen_study.STUDY.settings())
    for name in gen.MEASURES:
        f = [f for f in out if f.claim.startswith(f"sharpness ({gen.NAMES[name]}) predicts")][0]
        assert f.verdict == verdict, f
    spot = [f for f in out if f.claim.startswith("there is a sweet spot")][0]
    assert spot.measured.startswith("sweet spot B=64") and spot.verdict == "agrees"
    gap = [f for f in out if f.claim.startswith("the generalization gap")][0]
    assert gap.verdict == "agrees"


# ------------------------------------------------------------------ sharpness against brute force

def box_maximum(f, theta, eps, points=401):
    """Brute force: the largest f over a fine grid of the box |d_i| <= eps (|theta_i| + 1), 2 parameters."""
    r = eps * (np.abs(theta) + 1)
    g0, g1 = np.meshgrid(np.linspace(-r[0], r[0], points), np.linspace(-r[1], r[1], points), indexing="ij")
    return float(np.max(f(np.stack([theta[0] + g0, theta[1] + g1]))))


@pytest.mark.parametrize("theta", [(0.7, -1.3), (0.0, 0.0), (2.0, 0.5)])
def test_epsilon_sharpness_matches_a_grid_search(theta):
    def f(t):  # a smooth, non-quadratic 2-parameter loss (works on arrays of points, axis 0 = parameter)
        return 0.5 * (t[0] - 0.3) ** 2 + 2.0 * t[1] ** 2 + 0.3 * jnp.sin(3 * t[0] * t[1]) + 1.0

    theta = np.asarray(theta, np.float32)
    eps = 0.05
    phi, base = jax.jit(lambda k: hessian.epsilon_sharpness(f, jnp.asarray(theta), k, eps=eps, steps=40))(
        jax.random.PRNGKey(1))
    brute = box_maximum(lambda t: np.asarray(f(t)), theta.astype(np.float64), eps)
    f0 = float(f(theta.astype(np.float64)))
    expected = 100 * (brute - f0) / (1 + f0)
    assert float(base) == pytest.approx(f0, rel=1e-5)
    assert float(phi) == pytest.approx(expected, rel=2e-2, abs=1e-4)


def test_epsilon_sharpness_at_a_minimum_reaches_a_corner():
    # f = t0^2 + 4 t1^2 at its minimum t = 0: the box is |d_i| <= eps, its maximum 5 eps^2 at
    # every corner, and f(0) = 0, so phi = 100 * 5 eps^2 exactly.
    eps = 1e-2
    phi, _ = hessian.epsilon_sharpness(lambda t: t[0] ** 2 + 4 * t[1] ** 2, jnp.zeros(2), jax.random.PRNGKey(0),
                                         eps=eps, steps=10)
    assert float(phi) == pytest.approx(100 * 5 * eps ** 2, rel=1e-4)


def test_power_iteration_finds_the_top_eigenvalue_of_a_quadratic():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    eigenvalues = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    a = jnp.asarray(q @ np.diag(eigenvalues) @ q.T, jnp.float32)
    # f(t) = t^T A t / 2 has Hessian A; its Hessian-vector product through JAX, as the study does.
    hvp = jax.jit(lambda v: jax.jvp(jax.grad(lambda t: 0.5 * t @ a @ t), (jnp.ones(6),), (v,))[1])
    value, used = hessian.power_iteration(hvp, rng.normal(size=6), iterations=500, tol=1e-7)
    assert value == pytest.approx(5.0, rel=1e-4) and used < 500


def test_hutchinson_is_exact_for_a_diagonal_and_unbiased_otherwise():
    diag = jnp.asarray([3.0, -1.0, 0.5, 2.0])
    rng = np.random.default_rng(0)
    probes = rng.choice(np.array([-1.0, 1.0], np.float32), size=(16, 4))
    # v^T D v = sum_i D_ii v_i^2 = tr(D) for every +-1 probe.
    np.testing.assert_allclose(hessian.hutchinson_values(lambda v: diag * v, probes), 4.5, rtol=1e-6)
    a = rng.normal(size=(5, 5)).astype(np.float32)
    a = jnp.asarray(a + a.T)
    probes = rng.choice(np.array([-1.0, 1.0], np.float32), size=(20000, 5))
    values = np.asarray(hessian.hutchinson_values(lambda v: a @ v, probes))
    assert abs(values.mean() - float(jnp.trace(a))) < 4 * values.std() / np.sqrt(len(values))


def test_measure_sharpness_matches_the_full_hessian_of_a_tiny_mlp():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    data = Dataset("tiny", x, y, x[:10], y[:10], 2)
    net = mlp((3,), 2, (4,))
    params, _ = net.init(jax.random.PRNGKey(0))
    settings = dict(gen_study.STUDY.settings(), pool=30, hutchinson_probes=4000, power_iterations=1000)
    config = RunConfig(DataConfig("tiny"), ModelConfig(), OptimizerConfig(), batch_size=8, epochs=1)
    row, = gen_study.measure_sharpness(Checkpoint(config, 1, params, data, net, settings))

    rows = pool_rows(40, 30, gen_study.POOL_SEED)
    theta, unravel = ravel_pytree(params)

    def loss(t):  # mean cross-entropy of the pool, written out independently
        logits, _ = net.apply(unravel(t), {}, x[rows], train=False, key=None)
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[np.arange(30), y[rows]])

    hessian = np.asarray(jax.jit(jax.hessian(loss))(theta), np.float64)  # jit: one compile, not one per op
    eigen = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    top = eigen[np.argmax(np.abs(eigen))]
    assert row["lambda_max"] == pytest.approx(top, rel=1e-3)
    assert abs(row["hessian_trace"] - np.trace(hessian)) < 4 * row["hessian_trace_se"]
    assert row["pool_loss"] == pytest.approx(float(jax.jit(loss)(theta)), rel=1e-5)
    assert row["pool"] == 30 and row["eps_sharpness"] > 0
