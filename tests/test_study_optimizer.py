"""The ``optimizer`` study (Shen 2018, science.md 3.4: Adam vs SGD) at quick size, checked
against the store: per-step records and checkpoint measurements, recomputed with numpy."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from batchlab.store import Store
from batchlab.studies import get_study
from helpers import quick_study

STUDY = get_study("optimizer")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    result, db, out = quick_study("optimizer", tmp_path_factory)
    with Store(db, create=False) as store:
        runs = store.load(result.run_ids, steps=True)
        norms = store.measurements("param_norm")
    return result, runs, norms, out


def norm_at(norms: pd.DataFrame, run_id: str, epoch: int) -> float:
    (value,) = norms[(norms.run_id == run_id) & (norms.epoch == epoch)].weight_norm
    return float(value)


def select(runs, optimizer: str, b: int, lr: float | None = None):
    return [r for r in runs if r.config.optimizer.name == optimizer and r.config.batch_size == b
            and (lr is None or math.isclose(r.config.optimizer.lr, lr))]


def number_after(text: str, label: str) -> float:
    return float(re.search(rf"{re.escape(label)} (-?[0-9.]+(?:e-?\d+)?)", text).group(1))


def test_norms_agree_across_instruments(study):
    """||theta_T|| from the per-step instrument equals the checkpoint's; ||theta_0|| is within
    one update of the first step's norm (triangle inequality); a seed's initial weights are
    the same for SGD and Adam."""
    result, runs, norms, _ = study
    initial = {}
    for run in runs:
        start, end = norm_at(norms, run.run_id, 0), norm_at(norms, run.run_id, result.settings["epochs"])
        assert run.steps["weight_norm"][-1] == pytest.approx(end, rel=1e-5)
        assert abs(run.steps["weight_norm"][0] - start) <= run.steps["dist_init"][0] * (1 + 1e-4) + 1e-6
        initial.setdefault(run.config.seed, set()).add(round(start, 4))
    assert all(len(values) == 1 for values in initial.values())
    assert len(initial) == result.settings["seeds"]


def test_findings_recomputed_from_store(study):
    result, runs, norms, _ = study
    s, epochs = result.settings, result.settings["epochs"]
    found = iter(result.findings)
    for b in sorted(s["batch_sizes"]):
        adam = select(runs, "adam", b)
        for lr in s["sgd_lrs"]:
            sgd = select(runs, "sgd", b, lr)
            assert len(adam) == len(sgd) == s["seeds"]
            larger, near, lower = next(found), next(found), next(found)
            assert f"B={b}" in larger.claim and f"SGD lr {lr:g}" in larger.claim
            final = {name: [norm_at(norms, r.run_id, epochs) for r in group] for name, group in
                     (("adam", adam), ("sgd", sgd))}
            diff = np.mean(final["adam"]) - np.mean(final["sgd"])
            assert number_after(larger.measured, "difference") == pytest.approx(diff, rel=5e-3, abs=1e-6)
            ratio = np.mean([norm_at(norms, r.run_id, epochs) / norm_at(norms, r.run_id, 0) for r in sgd])
            assert number_after(near.measured, "ratio SGD") == pytest.approx(ratio, rel=5e-3)
            acc = np.mean([r.history["test_acc"][-1] for r in adam]) - np.mean([r.history["test_acc"][-1] for r in sgd])
            assert number_after(lower.measured, "difference") == pytest.approx(acc, rel=5e-3, abs=1e-6)
    assert next(found, None) is None


def test_adam_leaves_the_initial_sphere_more_than_sgd(study):
    """At the smallest B and SGD's smaller lr, Adam's norm ratio departs from 1 more than SGD's,
    and SGD's ratio stays within the tolerance at the largest B."""
    result, runs, norms, _ = study
    s, epochs = result.settings, result.settings["epochs"]

    def ratios(group):
        return [norm_at(norms, r.run_id, epochs) / norm_at(norms, r.run_id, 0) for r in group]

    small, large, lr = min(s["batch_sizes"]), max(s["batch_sizes"]), min(s["sgd_lrs"])
    assert np.mean(np.abs(np.subtract(ratios(select(runs, "adam", small)), 1))) > \
        np.mean(np.abs(np.subtract(ratios(select(runs, "sgd", small, lr)), 1)))
    assert all(abs(r - 1) < s["tolerance"] for r in ratios(select(runs, "sgd", large, lr)))
    verdicts = [f.verdict for f in result.findings if "stays near" in f.claim and f"B={large}," in f.claim
                and f"SGD lr {lr:g}," in f.claim]
    assert verdicts == ["agrees"]


def test_weight_curves_start_at_the_initial_norm(study):
    result, runs, norms, _ = study
    weights = result.tables["weights"]
    start = weights[weights.step == 0]
    assert len(start) == len(result.tables["groups"])
    initial = norms[norms.epoch == 0].weight_norm.mean()
    assert start["mean"].to_numpy() == pytest.approx(np.full(len(start), initial), rel=1e-9)
    assert (weights["count"] == result.settings["seeds"]).all()


def test_outputs_written(study):
    result, _, _, out = study
    for spec in STUDY.figures:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{spec.name}{suffix}").stat().st_size > 500
    text = (out / "findings.md").read_text()
    s = result.settings
    assert text.count("- **") == len(result.findings) == 3 * len(s["batch_sizes"]) * len(s["sgd_lrs"])
    assert "## How to read this" in text
