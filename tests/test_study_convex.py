"""The convex study at quick size: exact optimum, distance to it vs B, files, and numbers from the store."""

import re

import numpy as np
import pytest

from batchlab.analysis import softmax_optimum
from batchlab.errors import BatchlabError
from batchlab.store import Store
from batchlab.studies import get_study
from batchlab.studies import convex as study_module
from batchlab.instruments.checkpoint import Checkpoint
from batchlab.studies.runner import run_study
from helpers import quick_study


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return quick_study("convex", tmp_path_factory)


@pytest.fixture(scope="module")
def blobs():
    s = get_study("convex").settings(quick=True)
    return study_module.dataset(s)


def _finding(findings, text):
    (found,) = [f for f in findings if text in f.claim]
    return found


def test_optimum_matches_scikit_learn(blobs):
    """An independent solver (scikit-learn, no penalty) finds the same probabilities and parameters."""
    from sklearn.linear_model import LogisticRegression

    best = softmax_optimum.solve_optimum(blobs.x_train, blobs.y_train, blobs.num_classes)
    x = blobs.x_train.astype(np.float64)
    sk = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000).fit(x, blobs.y_train)
    theta_sk = np.vstack([sk.coef_.T, sk.intercept_[None]])
    theta_sk -= theta_sk.mean(axis=1, keepdims=True)  # scikit-learn's representative may differ by a class shift
    np.testing.assert_allclose(best.theta, theta_sk, atol=1e-4)
    np.testing.assert_allclose(softmax_optimum.probabilities(best.theta, softmax_optimum.augment(x)),
                               sk.predict_proba(x), atol=1e-6)
    # The gradient written out independently: (1/N) [x, 1]^T (softmax - one-hot) must vanish at the optimum.
    xa = np.hstack([x, np.ones((len(x), 1))])
    logits = xa @ best.theta
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = xa.T @ (p - np.eye(blobs.num_classes)[blobs.y_train]) / len(x)
    assert np.linalg.norm(grad) < 1e-9
    assert best.mu > 1e-3 and np.linalg.norm(best.theta) < 100  # a finite, strongly convex optimum


def test_trace_sigma_matches_the_engine_loss(blobs):
    """tr(Sigma) at the optimum from numpy equals the one from JAX per-sample gradients of batchlab's loss."""
    import jax.numpy as jnp

    from batchlab.instruments.gradients import per_sample_gradients
    from batchlab.models.logreg import logreg

    best = softmax_optimum.solve_optimum(blobs.x_train, blobs.y_train, blobs.num_classes)
    params = {"w": jnp.asarray(best.theta[:-1], jnp.float32), "b": jnp.asarray(best.theta[-1], jnp.float32)}
    g = np.asarray(per_sample_gradients(logreg(blobs.sample_shape, blobs.num_classes), params, {},
                                        jnp.asarray(blobs.x_train), jnp.asarray(blobs.y_train)), np.float64)
    trace = ((g - g.mean(0)) ** 2).sum(1).mean()
    assert trace == pytest.approx(best.trace_sigma, rel=1e-4)


def test_separable_data_is_refused_before_training(tmp_path):
    db = tmp_path / "wine.db"
    with pytest.raises(BatchlabError, match="no finite optimum"):
        run_study(get_study("convex"), quick=True, overrides={"data": "wine"}, db=db, out=tmp_path / "out")
    assert not db.exists() or not Store(db).run_ids()


def test_checkpoint_measure_sees_only_the_centred_distance(blobs):
    """At Theta* plus a shift common to all classes the distance is 0; a real offset counts in full."""
    s = get_study("convex").settings(quick=True)
    best = study_module.optimum(blobs)
    shift = np.full((best.theta.shape[0], 1), 0.7)
    offset = np.zeros_like(best.theta)
    offset[0, 0], offset[0, 1] = 0.3, -0.3
    for theta, want_distance, want_null in ((best.theta + shift, 0.0, np.linalg.norm(np.repeat(shift, 3, 1))),
                                            (best.theta + offset, np.sqrt(0.18), 0.0)):
        cp = Checkpoint(config=None, epoch=1, params={"w": theta[:-1], "b": theta[-1]}, dataset=blobs, model=None,
                        settings=s)
        (record,) = study_module.measure(cp)
        assert record["distance"] == pytest.approx(want_distance, abs=1e-9)
        assert record["null_component"] == pytest.approx(want_null, abs=1e-9)
        assert record["loss_gap"] >= -1e-12


def test_distance_shrinks_with_batch_size_and_vanishes_at_full_batch(result):
    res, _, _ = result
    table = res.tables["by_batch"].sort_values("batch_size")
    n = int(res.tables["optimum"].n_train.iloc[0])
    assert table.batch_size.iloc[-1] == n and table.batch_size.iloc[0] == 1
    assert np.all(np.diff(table.distance) < 0)  # every larger B ends closer to Theta*
    assert np.all(np.diff(table.loss_gap) < 0)
    assert table.distance.iloc[-1] < res.settings["threshold"] * table.distance.iloc[0]
    # B = N is one deterministic computation: no interval of its seeds' float rounding.
    assert np.isnan(table.distance_high.iloc[-1]) and table.rounding_spread.iloc[-1] < 1e-3
    assert table.distance.iloc[-1] < res.settings["threshold"] * table.distance_low.iloc[0]
    assert _finding(res.findings, "distance to the optimum over").verdict == "agrees"
    assert _finding(res.findings, "reaches the optimum").verdict == "agrees"
    assert _finding(res.findings, "loss gap").verdict == "agrees"
    # SGD from the zero init never leaves the class-centred subspace (up to float32 rounding).
    assert res.tables["runs"].null_component.max() < 1e-4


def test_numbers_recomputed_from_the_store(result):
    res, db, _ = result
    with Store(db, create=False) as store:
        runs = {r.run_id: r for r in store.load(steps=False)}
        meas = store.measurements(study_module.INSTRUMENT)
    meas["batch_size"] = [runs[r].config.batch_size for r in meas.run_id]
    epochs = {r.config.batch_size: r.config.epochs for r in runs.values()}
    # The checkpoints are the last epochs of each run.
    for b, part in meas.groupby("batch_size"):
        assert set(part.epoch) == set(range(epochs[b] - res.settings["last_epochs"] + 1, epochs[b] + 1))
    per_run = meas.groupby(["batch_size", "run_id"]).distance.mean()
    geometric = np.exp(np.log(per_run).groupby(level=0).mean())  # distances are positive: geometric means
    table = res.tables["by_batch"].set_index("batch_size")
    np.testing.assert_allclose(table.distance.to_numpy(), geometric.loc[table.index].to_numpy(), rtol=1e-12)
    n = max(epochs)
    ratio = per_run.loc[n].mean() / geometric.loc[1]
    text = _finding(res.findings, "reaches the optimum").measured
    assert float(re.search(r"ratio (\S+)", text).group(1)) == pytest.approx(ratio, rel=5e-3)
    # Every run made at least the asked number of updates.
    assert min(r.history["step"][-1] for r in runs.values()) >= res.settings["updates"]


def test_noise_law_fit(result):
    res, _, _ = result
    law = res.tables["noise_law"]
    assert (law.noise_term > 0).all() and len(law) == len(res.tables["by_batch"]) - 1  # B = N has no noise
    runs = res.tables["runs"]
    n = runs.n_train.iloc[0]
    one = runs[runs.batch_size == 1].iloc[0]
    assert one.noise_term == pytest.approx(res.settings["lr"] * one.trace_sigma)  # (N-1)/(N-1) = 1 at B = 1
    assert runs[runs.batch_size == n].noise_term.eq(0).all()
    for finding in (_finding(res.findings, "the squared distance grows"), _finding(res.findings, "the squared "
                                                                                               "distance is proportional")):
        slope = float(re.search(r"slope (\S+)", finding.measured).group(1))
        assert slope == pytest.approx(law.slope.iloc[0], rel=5e-3) and slope > 0


def test_files_written(result):
    res, _, out = result
    for name in ("distance_to_optimum", "noise_ball_law"):
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{name}{suffix}").stat().st_size > 0
    md = (out / "findings.md").read_text()
    verdicts = sum(md.count(f"**{v}**") for v in ("agrees", "disagrees", "inconclusive"))
    assert "## Findings" in md and verdicts == 5
    assert "time constants" in md
