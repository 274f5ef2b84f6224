"""The ``distance`` study (Shen 2018, science.md 3.3) at quick size, checked against the store.

One quick run (module fixture); every number checked here is recomputed with numpy from the
stored per-step records, not read back from the study's own tables.
"""

import math
import re

import numpy as np
import pandas as pd
import pytest

from batchlab.store import Store
from batchlab.studies import get_study
from helpers import quick_study

STUDY = get_study("distance")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    result, db, out = quick_study("distance", tmp_path_factory)
    with Store(db, create=False) as store:
        runs = store.load(result.run_ids, steps=True)
    return result, runs, out


def finding(result, words: str):
    (match,) = [f for f in result.findings if words in f.claim]
    return match


def number_after(text: str, label: str) -> float:
    return float(re.search(rf"{re.escape(label)} (-?[0-9.]+(?:e-?\d+)?)", text).group(1))


def n_train(runs) -> int:
    return int(runs[0].history["samples_seen"][1])


def base_runs(runs, s, epochs=None):
    return [r for r in runs if math.isclose(r.config.optimizer.lr, s["lr"])
            and (epochs is None or r.config.epochs == epochs)]


def test_distance_is_a_distance(study):
    """||theta_t - theta_0|| after the first update equals that update's size, and never
    exceeds the path length (triangle inequality)."""
    _, runs, _ = study
    for run in runs:
        dist, size = run.steps["dist_init"], run.steps["update_norm"]
        assert dist[0] == pytest.approx(size[0], rel=1e-4)
        assert np.all(dist <= np.cumsum(size) * (1 + 1e-4) + 1e-7)
        assert np.all(np.diff(run.steps["step"]) == 1) and run.steps["step"][0] == 1


def test_budget_distance_recomputed_from_store(study):
    result, runs, _ = study
    s, n = result.settings, n_train(runs)
    by_b: dict[int, list[float]] = {}
    for run in base_runs(runs, s, s["epochs"]):
        at = run.steps["samples_seen"] == s["epochs"] * n
        assert at.sum() == 1  # the budget's last update ends exactly at E * N samples
        by_b.setdefault(run.config.batch_size, []).append(float(run.steps["dist_init"][at][0]))
    found = finding(result, "travel less far")
    for b, values in by_b.items():  # geometric means: a distance is positive and spreads by factors
        assert f"B={b}: {np.exp(np.mean(np.log(values))):.3g}" in found.measured
    table = result.tables["runs"]
    sweep = table[table.role == "sweep"].groupby("batch_size").dist_budget.mean()
    assert sweep.to_dict() == pytest.approx({b: np.mean(v) for b, v in by_b.items()}, rel=1e-9)
    # The claim itself: at a fixed lr and epoch budget, larger B ends nearer theta_0.
    means = [np.mean(by_b[b]) for b in sorted(by_b)]
    assert means == sorted(means, reverse=True)
    assert found.verdict == "agrees"


def test_fixed_step_exponent_recomputed(study):
    """The power-law exponent of distance vs B at a fixed update count S, from the store."""
    result, runs, _ = study
    s = result.settings
    base = base_runs(runs, s)
    reached: dict[int, int] = {}
    for run in base:
        reached[run.config.batch_size] = max(reached.get(run.config.batch_size, 0), int(run.steps["step"][-1]))
    s_fixed = min(reached.values())
    at: dict[int, dict[int, float]] = {}
    for run in base:
        hit = run.steps["step"] == s_fixed
        if hit.any():
            at.setdefault(run.config.batch_size, {})[run.config.seed] = float(run.steps["dist_init"][hit][0])
    sizes = sorted(at)
    alpha = np.polyfit(np.log2(sizes), [np.mean(np.log2(list(at[b].values()))) for b in sizes], 1)[0]
    found = finding(result, "same number of updates")
    assert f"S={s_fixed}" in found.claim
    assert number_after(found.measured, "alpha") == pytest.approx(alpha, rel=5e-3, abs=1e-5)
    # Shen's contrast: per update, B hardly matters; per epoch, it matters a lot.
    alpha_epochs = number_after(found.measured.split("for contrast")[1], "alpha")
    assert abs(alpha) < abs(alpha_epochs) / 3


def test_long_run_continues_the_budget_run(study):
    """The largest B at the base lr for more epochs is the same run, continued: up to the
    budget its distance matches the short run's (so the fixed-step comparison may use it)."""
    result, runs, _ = study
    s, big = result.settings, max(result.settings["batch_sizes"])
    short = {r.config.seed: r for r in base_runs(runs, s, s["epochs"]) if r.config.batch_size == big}
    long = {r.config.seed: r for r in base_runs(runs, s, s["long_epochs"]) if r.config.batch_size == big}
    assert short and short.keys() == long.keys()
    for seed, run in short.items():
        k = len(run.steps["dist_init"])
        np.testing.assert_allclose(long[seed].steps["dist_init"][:k], run.steps["dist_init"], rtol=1e-5)
        assert len(long[seed].steps["step"]) > k


def test_larger_lr_travels_farther(study):
    result, runs, _ = study
    s, big = result.settings, max(result.settings["batch_sizes"])
    final = {}
    for run in runs:
        if run.config.batch_size == big and run.config.epochs == s["epochs"]:
            final.setdefault(run.config.optimizer.lr, []).append(run.steps["dist_init"][-1])
    assert min(final[s["large_lr"]]) > max(final[s["lr"]])
    found = [f for f in result.findings if f"lr {s['large_lr']:g} travels farther" in f.claim][0]
    assert found.verdict == "agrees"
    ratio = np.exp(np.mean(np.log(final[s["large_lr"]])) - np.mean(np.log(final[s["lr"]])))
    assert number_after(found.measured, "ratio") == pytest.approx(ratio, rel=5e-3)


def test_spread_and_tail_recomputed(study):
    result, runs, _ = study
    s, n = result.settings, n_train(runs)
    spread = result.tables["spread"]
    for b in s["batch_sizes"]:
        group = [r for r in base_runs(runs, s, s["epochs"]) if r.config.batch_size == b]
        ends = [r.steps["dist_init"][r.steps["samples_seen"] == s["epochs"] * n][0] for r in group]
        row = spread[(spread.batch_size == b) & (spread.samples_seen == s["epochs"] * n)].iloc[0]
        assert row["std"] == pytest.approx(np.std(ends, ddof=1), rel=1e-9)
        assert f"B={b}: {np.std(ends, ddof=1):.3g}" in finding(result, "spreads more").measured
        window = [r.steps["update_norm"][r.steps["samples_seen"] <= s["epochs"] * n] for r in group]
        tails = [np.quantile(u, s["tail_quantile"]) / np.median(u) for u in window]
        assert all(t >= 1 for t in tails)
        assert f"B={b}: {np.exp(np.mean(np.log(tails))):.3g}" in finding(result, "heavier-tailed").measured
    for f in result.findings:
        assert f.verdict in ("agrees", "disagrees", "inconclusive")


def test_curves_are_thinned_and_start_at_zero(study):
    result, runs, _ = study
    curves = result.tables["curves"]
    start = curves[curves.step == 0]
    assert len(start) == curves.group.nunique() and (start["mean"] == 0).all()
    for group, part in curves.groupby("group"):
        members = [r for r in runs if len(r.steps["step"]) == part.step.max()]
        assert members, group  # the last update of the group's runs is kept
        assert len(part) <= STUDY.defaults["points"] + part.epoch.max() + 2
        assert (part["count"] == result.settings["seeds"]).all()
    # A thinned table, not every update of every run.
    assert len(curves) < sum(len(r.steps["step"]) for r in runs) / 2


def test_outputs_written(study):
    result, _, out = study
    for spec in STUDY.figures:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{spec.name}{suffix}").stat().st_size > 500
        assert len(pd.read_csv(out / f"{spec.name}.csv")) == len(result.tables[spec.table])
    text = (out / "findings.md").read_text()
    assert text.count("- **") == len(result.findings) == 8
    assert "## How to read this" in text and "updates" in text


def test_equivalence_and_spread_verdicts():
    """The two verdict helpers on hand-made intervals and seeds."""
    from batchlab.analysis.findings import Interval, verdict_from_interval, within
    from batchlab.analysis.trends import log_spread_slope

    assert within(Interval(0.0, -0.05, 0.05, 5), -0.1, 0.1) == "agrees"
    assert within(Interval(0.5, 0.3, 0.7, 5), -0.1, 0.1) == "disagrees"
    assert within(Interval(0.1, 0.05, 0.15, 5), -0.1, 0.1) == "inconclusive"
    rng = np.random.default_rng(0)
    widening = [rng.normal(0, scale, 12) for scale in (0.1, 1.0, 10.0)]
    slope = log_spread_slope([16, 64, 256], widening)
    assert verdict_from_interval(slope.low, slope.high, +1) == "agrees" and slope.low > 0
    assert verdict_from_interval(slope.low, slope.high, -1) == "disagrees"
    assert not log_spread_slope([16, 64], [[1.0, 2.0], [1.0, 3.0]]).given  # 2 seeds: no interval
