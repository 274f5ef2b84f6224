"""The gradient-norm study (Shen's gradient competition, science.md 3.2 and 4) at its quick size."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from batchlab.analysis import gradient_statistics as gn
from batchlab.analysis.gradient_norm import instrument_name
from batchlab.analysis.findings import AGREES, DISAGREES, INCONCLUSIVE
from batchlab.errors import BatchlabError
from batchlab.store import Store
from batchlab.studies import get_study
from batchlab.studies.gradient_noise import pool_rows
from batchlab.studies.runner import run_study
from helpers import quick_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return quick_study("gradient-norm", tmp_path_factory)


def stored_trials(db, settings) -> dict[tuple[int, int], np.ndarray]:
    """(epoch, B) -> the per-trial squared batch-sum norms, straight from the store's records."""
    with Store(db, create=False) as store:
        m = store.measurements(instrument_name(settings))
    rows = m[m.kind == "trials"]
    return {(int(r.epoch), int(r.batch_size)): np.asarray(r.sq_norms_sum, float) for r in rows.itertuples()}


def stored_points(db, settings) -> pd.DataFrame:
    with Store(db, create=False) as store:
        m = store.measurements(instrument_name(settings))
    return m[m.kind == "point"]


def test_sum_norm_grows_with_batch_and_squared_norms_match_theory(study):
    result, db, _ = study
    s = result.settings
    trials, points = stored_trials(db, s), stored_points(db, s)
    sums = points[points.reduction == "sum"]
    assert sorted(sums.epoch.unique()) == sorted(s["at_epochs"])
    tolerance = s["theory_tolerance"]
    expected = {}
    for epoch, group in sums.groupby("epoch"):
        group = group.sort_values("batch_size")
        assert list(group.batch_size) == list(s["batch_sizes"])
        assert np.all(np.diff(group.mean_norm) > 0)  # the article's observation, not competition
        sizes = list(group.batch_size)
        within = []
        for b, theory, q05, q95 in zip(sizes, group.theory_sq_norm, group.q05_norm, group.q95_norm):
            draws = trials[(epoch, b)]
            assert len(draws) == s["trials"]
            # Simultaneous 95% interval of the mean squared norm (Bonferroni over the B's) covers theory.
            half = stats.t.ppf(1 - 0.025 / len(sizes), len(draws) - 1) * draws.std(ddof=1) / math.sqrt(len(draws))
            assert abs(draws.mean() - theory) <= half, (epoch, b)
            assert q05 <= math.sqrt(theory) <= q95  # and the theory curve runs inside the trials' band
            # Matching is an equivalence: the whole interval of the relative error within +-tolerance.
            within.append(abs(draws.mean() + half - theory) <= tolerance * theory
                          and abs(draws.mean() - half - theory) <= tolerance * theory)
        expected[epoch] = AGREES if all(within) else INCONCLUSIVE
    grows = [f for f in result.findings if "summed over the batch" in f.claim]
    matches = [f for f in result.findings if "matches the theory" in f.claim]
    assert len(grows) == len(matches) == len(s["at_epochs"])
    assert all(f.verdict == AGREES for f in grows)
    assert [f.verdict for f in matches] == [expected[e] for e in sorted(expected)]


def test_findings_recomputed_from_the_store(study):
    result, db, _ = study
    s = result.settings
    trials, points = stored_trials(db, s), stored_points(db, s)
    first = min(s["at_epochs"])
    sizes = list(s["batch_sizes"])
    # The stored trials are the very batches measure_checkpoint summarised (same seed, same Gram matrix).
    sums = points[(points.reduction == "sum") & (points.epoch == first)].set_index("batch_size")
    means = np.array([trials[(first, b)].mean() for b in sizes])
    np.testing.assert_allclose(means, sums.loc[sizes, "mean_sq_norm"], rtol=1e-5)
    # Finding 1: slope of the mean batch-sum norm per doubling of B.
    slope = np.polyfit(np.log2(sizes), [np.sqrt(trials[(first, b)]).mean() for b in sizes], 1)[0]
    finding = next(f for f in result.findings if f.claim.startswith(f"epoch {first}: with the loss summed"))
    assert f"slope {slope:.3g} [" in finding.measured
    # Finding 2: the exponent k, a least-squares slope of log E||sum g||^2 on log B.
    k = np.polyfit(np.log(sizes), np.log(means), 1)[0]
    row = result.tables["statistics"].set_index("epoch").loc[first]
    assert row.exponent == pytest.approx(k, rel=1e-9)
    assert row.exponent_low < k < row.exponent_high
    assert f"k = {k:.3g} [" in next(f for f in result.findings if f.claim.startswith(f"epoch {first}: the squared"))\
        .measured


def test_noise_scale_and_early_versus_late(study):
    result, _, out = study
    table = result.tables["statistics"]
    assert list(table.epoch) == sorted(result.settings["at_epochs"])
    # B_simple from the exact pool statistics and from the Monte-Carlo means agree roughly.
    assert np.all(np.abs(np.log(table.noise_scale_mc / table.noise_scale)) < np.log(1.5))
    text = (out / "findings.md").read_text()
    for value in table.noise_scale:
        assert f"= {value:,.0f} (weighted regression" in text
    early = result.findings[-1]
    assert early.claim.startswith("the early checkpoint") and early.verdict in (AGREES, DISAGREES, INCONCLUSIVE)


def test_files_written(study):
    result, _, out = study
    for figure in ("gradient_norm_vs_batch", "sq_norm_per_sample_vs_batch"):
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{figure}{suffix}").stat().st_size > 1000, figure + suffix
    points = pd.read_csv(out / "gradient_norm_vs_batch.csv")
    assert set(points.reduction) == {"sum", "mean"} and set(points.sampling) == {"without"}
    assert {"q05_norm", "q95_norm", "mean_sq_low", "mean_sq_high", "theory_sq_norm"} <= set(points.columns)
    assert len(pd.read_csv(out / "trials.csv")) == (len(result.settings["at_epochs"]) * result.settings["trials"]
                                                    * len(result.settings["batch_sizes"]))
    text = (out / "findings.md").read_text()
    assert text.count("- **") == len(result.findings) and "## Settings" in text


@pytest.mark.parametrize("overrides, message", [
    ({"sampling": "both"}, "sampling must be"),
    ({"batch_sizes": (1, 4096)}, "1..1437"),
    ({"trials": 1}, "trials must be"),
    ({"at_epochs": (3,)}, "two or more epochs"),
])
def test_bad_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(BatchlabError, match=message):
        run_study(get_study("gradient-norm"), quick=True, overrides=overrides, db=tmp_path / "x.db", out=tmp_path)
    assert not (tmp_path / "x.db").exists()  # rejected before the store is opened or anything trains


def test_exponent_recovers_a_power_law():
    rng = np.random.default_rng(1)
    sizes = [1, 2, 4, 8, 16]
    draws = [b ** 1.5 * rng.exponential(1.0, 4000) for b in sizes]
    k = gn.exponent(sizes, draws)
    assert k.low < 1.5 < k.high and k.high - k.low < 0.1


def test_simultaneous_interval_is_wider_than_one_at_a_time():
    from batchlab.analysis.intervals import simultaneous_t

    values = np.random.default_rng(2).normal(size=100)
    one, eleven = simultaneous_t(values, 1), simultaneous_t(values, 11)
    half = stats.t.ppf(0.975, 99) * values.std(ddof=1) / 10
    assert one.high - one.mean == pytest.approx(half)
    assert eleven.high - eleven.mean > 1.3 * half


def test_noise_scale_fit_recovers_exact_statistics():
    sizes, pool = np.array([1, 4, 16, 64, 256]), 1000
    exact = 0.5 + 40.0 / sizes * (pool - sizes) / (pool - 1)
    fit = gn.noise_scale_fit(sizes, exact, np.full(5, 0.01), pool, replace=False)
    assert fit["grad_sq"] == pytest.approx(0.5) and fit["trace"] == pytest.approx(40.0)
    assert fit["noise_scale"] == pytest.approx(80.0)


def test_joint_verdicts():
    from batchlab.analysis.findings import joint_verdict

    assert joint_verdict([AGREES, AGREES]) == AGREES
    assert joint_verdict([AGREES, INCONCLUSIVE]) == INCONCLUSIVE
    assert joint_verdict([AGREES, DISAGREES, INCONCLUSIVE]) == DISAGREES
    assert joint_verdict([]) == INCONCLUSIVE


def test_theory_check_flags_a_wrong_theory():
    rng = np.random.default_rng(3)
    trials = pd.DataFrame({"epoch": 1, "batch_size": np.repeat([1, 2], 4000),
                           "sq_norm_sum": np.concatenate([rng.exponential(1.0, 4000), rng.exponential(2.0, 4000)])})
    theory = pd.DataFrame({"epoch": 1, "batch_size": [1, 2], "theory_sq_norm": [1.0, 3.0]})
    table = gn.theory_check(trials, theory, tolerance=0.1)
    assert list(table.covered) == [True, False]
    assert list(table.equivalent) == [AGREES, DISAGREES]  # 4000 trials: within 10% of 1; far from 3


def test_pool_rows():
    rows = pool_rows(100, 30, seed=0)
    assert len(rows) == 30 and len(set(rows)) == 30 and np.all(np.diff(rows) > 0) and rows.max() < 100
    assert np.array_equal(pool_rows(100, 4096, seed=0), np.arange(100))
