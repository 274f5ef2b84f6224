"""The interval methods of ``analysis/intervals.py``: each against an independent computation
(scipy or plain numpy), each within the range of what it measures, none degenerate, and each
covering the truth 93-97% of the time by simulation at the studies' sizes (fixed seeds)."""

import itertools
import math

import numpy as np
import pytest
from scipy import special, stats

from batchlab.analysis import intervals as iv
from batchlab.analysis import trends
from batchlab.analysis.coverage import CASES, FALSE_AGREES, coverage, fit_log_grid
from batchlab.analysis.scaling import fit_critical_batch


def test_mean_t_is_scipys_t_interval_and_stays_in_its_range():
    x = np.array([0.62, 0.71, 0.55])
    got = iv.mean_t(x)
    assert (got.low, got.high) == pytest.approx(stats.t.interval(0.95, 2, loc=x.mean(), scale=stats.sem(x)))
    assert got.method == iv.MEAN_T
    # Two seeds of a run that barely learns: the t-interval reaches below 0; kept within [0, 1].
    acc = iv.mean_t([0.03, 0.30], (0.0, 1.0))
    assert acc.low == 0.0 and 0.3 < acc.high <= 1.0 and acc.mean == pytest.approx(0.165)
    assert iv.mean_t([0.998, 0.9999], (0.0, 1.0)).high == 1.0


def test_geometric_t_is_the_t_interval_of_the_logs_and_stays_positive():
    x = np.array([40.0, 400.0, 90.0])
    got = iv.geometric_t(x)
    low, high = stats.t.interval(0.95, 2, loc=np.log(x).mean(), scale=stats.sem(np.log(x)))
    assert (got.mean, got.low, got.high) == pytest.approx((stats.gmean(x), math.exp(low), math.exp(high)))
    assert got.low > 0 and iv.mean_t(x).low < 0  # the raw t-interval of the same values goes negative
    assert iv.geometric_t([np.nan, 4.0, 16.0]).mean == pytest.approx(8.0)


def test_welch_and_the_slope_against_scipy_and_least_squares():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.3, 6), rng.normal(0.2, 0.5, 9)
    got = iv.welch(a, b)
    test = stats.ttest_ind(a, b, equal_var=False)
    assert (got.low, got.high) == pytest.approx(tuple(test.confidence_interval(0.95)))
    xs, groups = [1, 2, 4, 8], [rng.normal(0.1 * k, 0.05, 4) for k in range(4)]
    slope = trends.slope_t(xs, groups)
    assert slope.mean == pytest.approx(np.polyfit(np.log2(xs), [g.mean() for g in groups], 1)[0])
    ratio = iv.welch_log([2.0, 2.2, 1.9], [1.0, 1.1, 0.9])
    assert ratio.mean == pytest.approx(stats.gmean([2.0, 2.2, 1.9]) / stats.gmean([1.0, 1.1, 0.9]))


def test_log_spread_slope_uses_the_chi_square_variance_of_log_s2():
    """With every group of n = 4 the slope's variance is sum c_k^2 psi'(3/2) / (2 ln 2)^2."""
    groups = [np.array([0.0, 1.0, 2.0, 4.0]) * f for f in (1.0, 2.0, 4.0)]  # std doubles per step of x
    got = trends.log_spread_slope([16, 64, 256], groups)
    assert got.mean == pytest.approx(0.5)  # log2 std up by 1 per 2 doublings of B
    c = trends.slope_weights(np.log2([16, 64, 256]))
    half = 1.959964 * math.sqrt((c ** 2).sum() * special.polygamma(1, 1.5)) / (2 * math.log(2))
    assert (got.high - got.low) / 2 == pytest.approx(half, rel=1e-5)
    assert not trends.log_spread_slope([16, 64], [[1.0, 2.0], [1.0, 3.0]]).given  # 2 seeds: refused


def test_spearman_permutation_is_exact():
    x, y = [1, 2, 3, 4, 5], [2.0, 1.0, 4.0, 3.0, 5.0]
    got = trends.spearman_permutation(x, y)
    rhos = [stats.spearmanr(x, p).statistic for p in itertools.permutations(y)]
    assert got.rho == pytest.approx(0.8)
    assert got.p_greater == pytest.approx(np.mean(np.array(rhos) >= 0.8 - 1e-12))
    assert trends.spearman_permutation([1, 2, 3], [1, 2, 3]).p_greater == pytest.approx(1 / 6)


@pytest.mark.parametrize("values", [[0.333, 0.333], [5.0, 5.0, 5.0]])
def test_no_spread_gives_no_interval_rather_than_a_point(values):
    """Two seeds stuck at the same quantised accuracy, or a deterministic computation repeated,
    have a standard deviation of 0: that is not certainty."""
    for method in (iv.mean_t, iv.geometric_t):
        got = method(values)
        assert not got.given and "spread" in got.why and "no interval" in got.format()
    assert not iv.welch(values, values).given
    assert not trends.slope_t([1, 2], [values, values]).given


def test_format_prints_distinct_bounds_apart():
    assert iv.Interval(1.0, 0.9995, 1.0005, 3).format() == "1 [0.9995, 1.0005]"
    assert iv.Interval(45.0, 0.0, 100.0, 2).format(2) == "45 [0, 100]"  # not "1e+02"
    assert iv.Interval(0.5, math.nan, math.nan, 1, why="one seed").format() == "0.5 (no interval: one seed)"


def test_the_grid_fit_is_the_studys_fit():
    rng = np.random.default_rng(1)
    b = np.array([8, 16, 32, 64, 128, 256, 512, 1024], float)
    steps = 300 * (1 + 80 / b) * np.exp(rng.normal(0, 0.1, (4, len(b))))
    grid = fit_log_grid(b, np.log(steps))
    exact = [fit_critical_batch(b, s).b_crit for s in steps]
    np.testing.assert_allclose(grid, exact, rtol=0.01)


@pytest.mark.parametrize("case, n", [(c, n) for c in CASES for n in c.seeds], ids=lambda v: getattr(v, "model", v))
def test_coverage_by_simulation(case, n):
    """Each interval method a finding uses covers 93-97.5% (Welch with 2 seeds a side is a
    little conservative: about 97%); each one-sided verdict test claims an effect that is not
    there at most 2.5% of the time. The replaced methods miss by far, which is why they were."""
    sims = 300 if case.method == "percentile_bootstrap" and n > 200 else 1500
    rate, missing = coverage(case, n, sims, seed=7)
    assert missing == 0.0
    if case.kind == FALSE_AGREES:
        assert rate <= 0.025 if case.used else rate > 0.03
    elif case.used:
        assert 0.93 <= rate <= 0.975, rate
    else:
        assert rate < 0.9
