"""How often each interval method of ``analysis/intervals.py`` covers the truth, by simulation at
the sizes the studies use (2, 3 or 5 seeds; 3 to 8 batch sizes; 200 Monte-Carlo trials).

Each case draws ``sims`` data sets from a model whose true value is known, computes the
method's 95% interval on every one at once (the methods' array cores) and returns the share
that contains the truth. Nominal 95% should give 93-97%. The cases marked *not used* are the
methods batchlab replaced, kept to show why: a percentile bootstrap over 2-5 seeds.

For a verdict that is a one-sided test (a permutation test, the best of several batch sizes
against a reference), the rate is instead how often it *agrees* on data sets without the
effect: at most 2.5%.

``tests/test_interval_coverage.py`` runs every case at a size that takes seconds;
``benchmarks/bench_coverage.py`` at 4,000 data sets (its table is in the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from batchlab.analysis.intervals import mean_t_core, welch_core
from batchlab.analysis.trends import log_spread_core, slope_t_core, slope_weights, spearman

QUICK_SIZES = (16, 64, 256)  # the critical-batch study's batch sizes at quick size
FAITHFUL_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)


def _covers(low, high, truth) -> np.ndarray:
    return (low <= truth) & (truth <= high)


def mean_t_case(rng, sims: int, n: int) -> np.ndarray:
    """Normal replicates (mean 0.8, sd 0.05: an accuracy over seeds)."""
    _, low, high = mean_t_core(rng.normal(0.8, 0.05, (sims, n)))
    return _covers(low, high, 0.8)


def geometric_t_case(rng, sims: int, n: int) -> np.ndarray:
    """Log-normal replicates (median 100, sd of log 0.5: steps or a noise scale over seeds)."""
    _, low, high = mean_t_core(np.log(rng.lognormal(math.log(100), 0.5, (sims, n))))
    return _covers(low, high, math.log(100))


def welch_case(rng, sims: int, n: int) -> np.ndarray:
    """Two normal groups of n, standard deviations 1 and 3, means differing by 1."""
    _, low, high, _ = welch_core(rng.normal(1, 1, (sims, n)), rng.normal(0, 3, (sims, n)))
    return _covers(low, high, 1.0)


def welch_log_case(rng, sims: int, n: int) -> np.ndarray:
    """Two log-normal groups (sd of log 0.3 and 0.6), ratio of medians 2."""
    a = np.log(rng.lognormal(math.log(2), 0.3, (sims, n)))
    b = np.log(rng.lognormal(0, 0.6, (sims, n)))
    _, low, high, _ = welch_core(a, b)
    return _covers(low, high, math.log(2))


def _slope_case(sizes):
    def case(rng, sims: int, n: int) -> np.ndarray:
        """Normal groups over the batch sizes, true slope 0.3 per doubling, standard deviations
        rising fourfold across the grid (small batches noisier or not: unequal either way)."""
        x = np.log2(sizes)
        sds = np.linspace(0.5, 2.0, len(sizes))
        groups = [rng.normal(0.3 * xk, sd, (sims, n)) for xk, sd in zip(x, sds)]
        _, low, high = slope_t_core(slope_weights(x), groups)
        return _covers(low, high, 0.3)
    return case


def _spread_case(sizes, relative: bool):
    def case(rng, sims: int, n: int) -> np.ndarray:
        """Normal replicates whose standard deviation grows by 2^0.2 per doubling of B (and, with
        ``relative``, whose mean falls by 2^-0.1: the coefficient of variation grows by 2^0.3)."""
        x = np.log2(sizes)
        means = 50 * 2 ** (-0.1 * x) if relative else np.full(len(x), 5.0)
        groups = [rng.normal(m, 2 ** (0.2 * xk), (sims, n)) for m, xk in zip(means, x)]
        _, low, high = log_spread_core(slope_weights(x), groups, relative)
        return _covers(low, high, 0.3 if relative else 0.2)
    return case


def fit_log_grid(b: np.ndarray, log_steps: np.ndarray, points: int = 1500) -> np.ndarray:
    """B_crit of the least-squares fit of log S = log S_min + log(1 + B_crit/B) for every row of
    ``log_steps`` (data sets x batch sizes) at once: the objective of
    :func:`batchlab.analysis.scaling.fit_critical_batch`, minimised over a log grid of B_crit
    from B_min/100 to 100 B_max (log S_min in closed form). NaN where the minimum is at the
    grid's end (the fit does not identify B_crit)."""
    grid = np.geomspace(b.min() / 100, b.max() * 100, points)
    shape = np.log1p(grid[:, None] / b[None, :])  # grid x sizes
    out = np.empty(log_steps.shape[0])
    for start in range(0, len(out), 256):  # chunks of data sets: grid x sizes x 256 numbers at a time
        y = log_steps[start:start + 256]
        resid = y[:, None, :] - shape[None, :, :]
        resid -= resid.mean(axis=2, keepdims=True)
        best = np.argmin((resid ** 2).sum(axis=2), axis=1)
        out[start:start + 256] = np.where((best == 0) | (best == points - 1), np.nan, grid[best])
    return out


def _critical_batch_steps(rng, sims: int, n: int, sizes) -> tuple[np.ndarray, float]:
    """Steps to target per data set, seed and B: S(B) = 200 (1 + 100/B) x log-normal noise (sd of
    log 0.15, the seed-to-seed spread of the study's runs)."""
    b = np.asarray(sizes, float)
    return 200 * (1 + 100 / b) * np.exp(rng.normal(0, 0.15, (sims, n, len(b)))), 100.0


def _seed_fits_case(sizes):
    def case(rng, sims: int, n: int) -> np.ndarray:
        """B_crit fitted on each seed alone, t-interval of log B_crit over seeds
        (:func:`batchlab.analysis.scaling.seed_fits` and :func:`~batchlab.analysis.intervals.geometric_t`)."""
        steps, truth = _critical_batch_steps(rng, sims, n, sizes)
        fits = fit_log_grid(np.asarray(sizes, float), np.log(steps.reshape(sims * n, -1))).reshape(sims, n)
        ok = np.isfinite(fits).all(axis=1)
        _, low, high = mean_t_core(np.log(np.where(np.isfinite(fits), fits, 1.0)))
        return np.where(ok, _covers(low, high, math.log(truth)), np.nan)
    return case


def _seed_bootstrap_case(sizes, resamples: int = 100):
    def case(rng, sims: int, n: int) -> np.ndarray:
        """Not used: the percentile bootstrap that resampled the seeds within each B, then refit
        the seed means (what the study did before)."""
        steps, truth = _critical_batch_steps(rng, sims, n, sizes)
        pick = rng.integers(0, n, (sims, resamples, n, len(sizes)))
        drawn = np.take_along_axis(steps[:, None, :, :], pick, axis=2).mean(axis=2)
        fits = fit_log_grid(np.asarray(sizes, float), np.log(drawn.reshape(sims * resamples, -1)))
        low, high = np.nanquantile(fits.reshape(sims, resamples), [0.025, 0.975], axis=1)
        return _covers(low, high, truth)
    return case


def std_bootstrap_case(rng, sims: int, n: int, resamples: int = 400) -> np.ndarray:
    """Not used: a percentile bootstrap of one group's standard deviation over n seeds (what the
    distance study's spread trend did before)."""
    x = rng.normal(0, 1, (sims, n))
    pick = rng.integers(0, n, (sims, resamples, n))
    stds = np.take_along_axis(x[:, None, :], pick, axis=2).std(axis=2, ddof=1)
    low, high = np.quantile(stds, [0.025, 0.975], axis=1)
    return _covers(low, high, 1.0)


def trials_bootstrap_case(rng, sims: int, n: int, resamples: int = 300) -> np.ndarray:
    """Percentile bootstrap over ``n`` Monte-Carlo trials per B of the slope of log mean against
    log B (the gradient-norm exponent k): skewed squared norms, gamma with shape 2 and mean
    B^1.2, over 9 batch sizes."""
    b = 2.0 ** np.arange(9)
    x = np.log(b)
    xc = x - x.mean()
    covered = []
    for _ in range(0, sims, 8):  # 8 data sets at a time: 8 x 9 x resamples x n numbers
        draws = rng.gamma(2.0, b[None, :, None] ** 1.2 / 2.0, (8, len(b), n))
        pick = rng.integers(0, n, (resamples, n))
        logs = np.log(draws[:, :, pick].mean(axis=3))  # data sets x B x resamples
        slopes = np.einsum("sbr,b->sr", logs - logs.mean(axis=1, keepdims=True), xc) / (xc @ xc)
        low, high = np.quantile(slopes, [0.025, 0.975], axis=1)
        covered.append(_covers(low, high, 1.2))
    return np.concatenate(covered)[:sims]


def simultaneous_case(rng, sims: int, n: int) -> np.ndarray:
    """The gradient-norm theory check: 9 Bonferroni t-intervals of skewed means (gamma, shape 2)
    over ``n`` trials each; covered when all 9 contain their means at once."""
    family = 9
    draws = rng.gamma(2.0, 1.0, (sims, family, n))
    _, low, high = mean_t_core(draws, level=1 - 0.05 / family)
    return _covers(low, high, 2.0).all(axis=1)


def spearman_null_case(rng, sims: int, n: int) -> np.ndarray:
    """Spearman's exact permutation test over ``n`` batch sizes' means with no association:
    wrongly agrees when the one-sided p of rho > 0 is <= 2.5%."""
    import itertools

    perms = np.array(list(itertools.permutations(range(n))))
    null = np.sort(spearman(np.broadcast_to(np.arange(n, dtype=float), perms.shape), perms.astype(float)))
    rho = spearman(rng.normal(size=(sims, n)), rng.normal(size=(sims, n)))
    p_greater = 1 - np.searchsorted(null, rho - 1e-12, side="left") / len(null)
    return p_greater <= 0.025


def _selection_case(how: str, candidates: int = 5):
    def case(rng, sims: int, n: int) -> np.ndarray:
        """No sweet spot: ``candidates`` batch sizes below the largest and the largest, all with
        the same mean test accuracy, ``n`` seeds. The best candidate is compared with the
        largest B; wrongly agrees when the interval says it is better. ``how``: ``bonferroni``
        (:func:`batchlab.analysis.selection.best_versus`), ``same`` (a 95% Welch interval of the
        best on the seeds that chose it), ``held-out`` (each seed's best chosen on the other
        seeds, a t-interval over seeds of the held-out contrasts)."""
        acc = rng.normal(0.8, 0.02, (sims, n, candidates + 1))
        cand, ref = acc[:, :, :-1], acc[:, :, -1]
        if how == "held-out":
            others = (cand.sum(axis=1, keepdims=True) - cand) / (n - 1)
            picked = np.take_along_axis(cand, others.argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
            _, low, _ = mean_t_core(picked - ref)
            return low > 0
        best = cand.mean(axis=1).argmax(axis=1)
        picked = np.take_along_axis(cand, best[:, None, None], axis=2)[:, :, 0]
        level = 1 - 0.05 / candidates if how == "bonferroni" else 0.95
        _, low, _, _ = welch_core(picked, ref, level)
        return low > 0
    return case


COVERAGE, FALSE_AGREES = "coverage", "false agrees"


@dataclass(frozen=True)
class Case:
    method: str  # the function of analysis/intervals.py (or the procedure) checked
    model: str  # the simulated data
    seeds: tuple[int, ...]  # the n each case is run at (seeds, or trials)
    simulate: Callable[..., np.ndarray]  # (rng, sims, n) -> per data set: covered (or wrongly agrees); NaN: none
    used: bool = True  # False: a replaced method, shown for contrast
    scale: float = 1.0  # the share of ``sims`` it runs at (the slow ones run fewer)
    kind: str = COVERAGE  # COVERAGE (target 93-97%) or FALSE_AGREES (a one-sided 2.5% test: target <= 2.5%)


CASES = (
    Case("mean_t", "normal replicates", (2, 3, 5), mean_t_case),
    Case("geometric_t", "log-normal replicates", (2, 3, 5), geometric_t_case),
    Case("welch", "two normal groups, sd 1 and 3", (2, 3, 5), welch_case),
    Case("welch_log", "two log-normal groups", (2, 3, 5), welch_log_case),
    Case("slope_t", "3 batch sizes, unequal sd", (2, 3, 5), _slope_case(QUICK_SIZES)),
    Case("slope_t", "8 batch sizes, unequal sd", (2, 3, 5), _slope_case(FAITHFUL_SIZES)),
    Case("log_spread_slope", "std over 3 batch sizes", (3, 5), _spread_case(QUICK_SIZES, False)),
    Case("log_spread_slope", "std over 8 batch sizes", (3, 5), _spread_case(FAITHFUL_SIZES, False)),
    Case("log_spread_slope(relative)", "std/mean over 3 batch sizes", (3, 5), _spread_case(QUICK_SIZES, True)),
    Case("seed fits + geometric_t", "B_crit, 3 batch sizes", (2, 3, 5), _seed_fits_case(QUICK_SIZES)),
    Case("seed fits + geometric_t", "B_crit, 8 batch sizes", (2, 3, 5), _seed_fits_case(FAITHFUL_SIZES)),
    Case("percentile_bootstrap", "exponent k over trials", (200, 1000), trials_bootstrap_case, scale=0.25),
    Case("simultaneous_t", "9 skewed means together", (200, 1000), simultaneous_case),
    Case("spearman_permutation", "no association, 5 batch sizes", (5,), spearman_null_case, kind=FALSE_AGREES),
    Case("best_versus", "no sweet spot, 5 candidates", (2, 3, 5), _selection_case("bonferroni"), kind=FALSE_AGREES),
    Case("best, 95% Welch", "no sweet spot, 5 candidates", (3, 5), _selection_case("same"), used=False,
         kind=FALSE_AGREES),
    Case("best on held-out seeds", "no sweet spot, 5 candidates", (3, 5), _selection_case("held-out"), used=False,
         kind=FALSE_AGREES),
    Case("bootstrap over seeds", "B_crit, 3 batch sizes", (2, 3), _seed_bootstrap_case(QUICK_SIZES), used=False,
         scale=0.05),
    Case("bootstrap over seeds", "std of one group", (3, 5), std_bootstrap_case, used=False, scale=0.5),
)


def coverage(case: Case, n: int, sims: int, seed: int = 0) -> tuple[float, float]:
    """(share of the data sets with an interval that cover the truth — or, for a
    FALSE_AGREES case, on which the verdict wrongly agrees —, share with no interval)."""
    covered = np.asarray(case.simulate(np.random.default_rng(seed), max(int(sims * case.scale), 20), n), float)
    given = ~np.isnan(covered)
    return float(covered[given].mean()) if given.any() else math.nan, float(1 - given.mean())


def coverage_table(sims: int = 4000, seed: int = 0):
    """Every case at every n: a DataFrame with method, model, n, data sets, kind, rate (the
    coverage, or the false-agree rate), share without an interval, and whether batchlab uses it."""
    import pandas as pd

    rows = []
    for case in CASES:
        for n in case.seeds:
            cover, missing = coverage(case, n, sims, seed)
            rows.append({"method": case.method, "model": case.model, "n": n,
                         "data_sets": max(int(sims * case.scale), 20), "kind": case.kind, "rate": cover,
                         "no_interval": missing, "used": case.used})
    return pd.DataFrame(rows)
