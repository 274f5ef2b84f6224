"""The critical-batch study at quick size, checked against the store with independent numpy
code, plus its analysis pieces on synthetic data where the answer is known."""

import math

import numpy as np
import pandas as pd
import pytest

from batchlab.analysis.critical_batch import per_batch
from batchlab.analysis.noise_scale import online_at_step, within_factor
from batchlab.analysis.scaling import operational_batch, seed_fits
from batchlab.analysis.findings import AGREES, DISAGREES, INCONCLUSIVE, Interval
from batchlab.analysis.intervals import geometric_t
from batchlab.store import Store
from helpers import quick_study

TARGET = 0.1  # the study's target is train_loss <= 0.1


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    result, db, out = quick_study("critical-batch", tmp_path_factory)
    assert result.settings["target"] == f"train_loss<={TARGET}"
    return result, db, out


def crossing(history: dict, x: str) -> float:
    """First ``x`` (step or epoch) with train_loss <= TARGET, linear between evaluations."""
    loss, xs = np.asarray(history["train_loss"], float), np.asarray(history[x], float)
    hit = np.flatnonzero(loss <= TARGET)
    if not len(hit):
        return math.nan
    i = hit[0]
    if i == 0:
        return xs[0]
    return xs[i - 1] + (TARGET - loss[i - 1]) / (loss[i] - loss[i - 1]) * (xs[i] - xs[i - 1])


def stored_runs(db):
    with Store(db, create=False) as store:
        runs = store.load(steps=False)
    return pd.DataFrame([{"run_id": r.run_id, "batch_size": r.config.batch_size, "lr": r.config.optimizer.lr,
                          "seed": r.config.seed, "steps": crossing(r.history, "step"),
                          "epochs": crossing(r.history, "epoch"),
                          # The best-run rule: ends at the target, not above twice its starting loss.
                          "usable": r.history["train_loss"][-1] <= min(TARGET, 2 * r.history["train_loss"][0])}
                         for r in runs])


def best_steps(runs: pd.DataFrame) -> pd.DataFrame:
    """Per B, the fewest mean steps among the lrs where every seed is usable."""
    settings = runs.groupby(["batch_size", "lr"]).agg(steps=("steps", "mean"), all_usable=("usable", "all"))
    done = settings[settings.all_usable].reset_index()
    return done.loc[done.groupby("batch_size").steps.idxmin()].sort_values("batch_size").reset_index(drop=True)


def grid_fit(b, s) -> float:
    """B_crit minimising sum (log S - log S_min - log(1 + B_crit/B))^2, S_min in closed form."""
    b, log_s = np.asarray(b, float), np.log(np.asarray(s, float))
    candidates = np.logspace(-1, 5, 60001)
    shape = np.log1p(candidates[:, None] / b[None, :])
    resid = log_s[None, :] - shape
    resid -= resid.mean(axis=1, keepdims=True)
    return float(candidates[np.argmin((resid ** 2).sum(axis=1))])


def test_steps_to_target_and_fit_recomputed_from_store(study):
    result, db, _ = study
    runs = stored_runs(db)
    assert runs.groupby(["batch_size", "lr"]).seed.nunique().min() >= 2
    best = best_steps(runs)
    table = result.tables["per_batch"].sort_values("batch_size").reset_index(drop=True)
    assert list(table.batch_size) == list(best.batch_size)
    np.testing.assert_allclose(table.lr, best.lr)
    np.testing.assert_allclose(table.steps, best.steps, rtol=1e-9)
    fit = result.tables["fit"].iloc[0]
    assert grid_fit(best.batch_size, best.steps) == pytest.approx(fit.b_crit, rel=2e-3)
    assert fit.b_crit_low <= fit.b_crit <= fit.b_crit_high


def test_operational_batch_recomputed_from_store(study):
    result, db, _ = study
    best = best_steps(stored_runs(db))
    excess = best.steps * best.batch_size / (best.steps.iloc[0] * best.batch_size.iloc[0])
    above = int(np.flatnonzero(excess.to_numpy() > 1.2)[0])
    lo, hi = np.log2(best.batch_size.iloc[above - 1]), np.log2(best.batch_size.iloc[above])
    f = (1.2 - excess.iloc[above - 1]) / (excess.iloc[above] - excess.iloc[above - 1])
    fit = result.tables["fit"].iloc[0]
    assert fit.operational == pytest.approx(2 ** (lo + f * (hi - lo)), rel=1e-9)
    assert fit.excess_at_largest == pytest.approx(excess.iloc[-1], rel=1e-9)


def test_b_simple_at_target_and_ratio_recomputed_from_store(study):
    result, db, _ = study
    s = result.settings
    runs = stored_runs(db)
    noise = runs[(runs.batch_size == s["noise_batch"]) & np.isclose(runs.lr, s["noise_lr"])]
    with Store(db, create=False) as store:
        exact = store.measurements("noise_scale_exact")
    values = []
    for run_id, epoch in zip(noise.run_id, noise.epochs):
        rows = exact[exact.run_id == run_id].sort_values("epoch")
        assert list(rows.epoch) == [e for e in s["noise_epochs"]]
        values.append(math.exp(np.interp(epoch, rows.epoch, np.log(rows.noise_scale))))
    geometric = math.exp(np.mean(np.log(values)))
    fit = result.tables["fit"].iloc[0]
    assert fit.b_simple_at_target == pytest.approx(geometric, rel=1e-9)
    own_fits = result.tables["seed_fits"].b_crit  # the ratio of geometric means, B_crit fitted per seed
    assert fit.ratio == pytest.approx(geometric / math.exp(np.mean(np.log(own_fits))), rel=1e-9)
    # Only the noise_lr runs are measured, at every checkpoint epoch.
    assert set(exact.run_id) == set(noise.run_id)


def test_censored_runs_are_kept_and_counted(study):
    result, db, _ = study
    runs = stored_runs(db)
    table = result.tables["runs"]
    assert len(table) == len(runs)  # never reached = NaN steps, not a dropped row
    assert table.steps.isna().sum() == runs.steps.isna().sum() > 0  # the quick grid has lrs that miss
    settings = result.tables["settings"].set_index(["batch_size", "lr"]).reached
    own = runs.groupby(["batch_size", "lr"]).steps.apply(lambda v: v.notna().mean())
    np.testing.assert_allclose(settings.sort_index().to_numpy(), own.sort_index().to_numpy())
    best = result.tables["per_batch"]
    assert (best[best.in_fit].reached == 1.0).all()


def test_online_estimate_recorded_and_nan_aware(study):
    result, _, _ = study
    online = result.tables["noise_online"]
    assert {"noise_scale", "noise_grad_sq", "noise_trace"} <= set(online.columns) and len(online) > 0
    # Withheld steps stay NaN: never replaced by a number, never dropped from the table.
    values = online.noise_scale.to_numpy(float)
    assert np.all(np.isnan(values) | (values > 0))
    at_target = result.tables["at_target"]
    assert len(at_target) == result.settings["seeds"]


def test_findings_and_files(study):
    result, _, out = study
    assert len(result.findings) == 6
    assert {f.verdict for f in result.findings} <= {AGREES, DISAGREES, INCONCLUSIVE}
    ratio = next(f for f in result.findings if "order of magnitude" in f.claim)
    assert "B_simple/B_crit =" in ratio.measured and "Welch t on the log scale" in ratio.measured
    for name in ("steps_to_target_vs_batch", "noise_scale_over_training", "reached_lr_batch"):
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{name}{suffix}").stat().st_size > 100
    text = (out / "findings.md").read_text()
    assert "## Findings" in text and "B_crit" in text


def test_online_ema_decay_matches_engine():
    from batchlab.instruments.step.noise_scale import DECAY as NOISE_EMA
    from batchlab.analysis.critical_batch import ONLINE_EMA_DECAY

    assert ONLINE_EMA_DECAY == NOISE_EMA


# ---------------------------------------------------------------- synthetic, known answers

def test_operational_batch_on_the_model_curve():
    s_min, b_crit = 20.0, 300.0
    b = 2.0 ** np.arange(3, 12, 0.125)  # fine grid: interpolation error is small
    steps = s_min * (1 + b_crit / b)
    # E(B)/E(B_0) = (B + B_crit)/(B_0 + B_crit) = 1.2  =>  B = 1.2 B_0 + 0.2 B_crit
    assert operational_batch(b, steps) == pytest.approx(1.2 * b[0] + 0.2 * b_crit, rel=0.01)
    assert operational_batch(b, 1000.0 / b) == math.inf  # perfect scaling never exceeds it


def test_batch_sizes_without_a_fully_reaching_lr_leave_the_fit():
    settings = pd.DataFrame({"batch_size": [8, 8, 64, 64, 512, 512], "lr": [0.1, 0.3] * 3,
                             "seeds": 3, "reached": [1.0, 0.0, 1.0, 1.0, 2 / 3, 0.0],
                             "usable": [1.0, 0.0, 1.0, 1.0, 2 / 3, 0.0],
                             "steps": [400.0, np.nan, 60.0, 50.0, 20.0, np.nan],
                             "test_acc": [0.9, 0.1, 0.9, 0.92, 0.8, 0.1]})
    best = per_batch(settings).set_index("batch_size")
    assert list(best.in_fit) == [True, True, False]
    assert best.loc[64, "lr"] == 0.3 and best.loc[512, "reached"] == pytest.approx(2 / 3)
    assert best.loc[512, "reached_any_lr"] == pytest.approx(2 / 6)


def test_each_seed_chooses_and_fits_on_its_own_and_the_interval_covers_b_crit():
    rng = np.random.default_rng(1)
    s_min, b_crit = 30.0, 150.0
    rows = [{"batch_size": b, "lr": lr, "seed": k, "steps": s_min * (1 + b_crit / b) * rng.lognormal(0, 0.05) * (
        1 if lr == 0.1 else 1.5)} for b in (8, 16, 32, 64, 128, 256, 512, 1024) for lr in (0.1, 0.3) for k in range(4)]
    runs = pd.DataFrame(rows)
    fits = seed_fits(runs, runs[["batch_size", "lr"]].drop_duplicates())
    assert list(fits.seed) == [0, 1, 2, 3]
    for seed, own in runs[runs.lr == 0.1].groupby("seed"):  # every seed's best lr is 0.1 here
        assert fits.set_index("seed").b_crit[seed] == pytest.approx(grid_fit(own.batch_size, own.steps), rel=2e-3)
    iv = geometric_t(fits.b_crit)
    assert iv.low < b_crit < iv.high and iv.high / iv.low < 2


def test_within_factor_verdicts():
    assert within_factor(Interval(1.0, 0.2, 5.0, 3), 10) == AGREES
    assert within_factor(Interval(15.0, 11.0, 20.0, 3), 10) == DISAGREES
    assert within_factor(Interval(0.03, 0.01, 0.05, 3), 10) == DISAGREES
    assert within_factor(Interval(0.5, 0.05, 2.0, 3), 10) == INCONCLUSIVE
    assert within_factor(Interval(1.0, math.nan, math.nan, 1), 10) == INCONCLUSIVE


def test_withheld_online_value_stays_missing():
    steps = pd.DataFrame({"run_id": "a", "step": [1, 2, 3, 4], "noise_scale": [5.0, 6.0, np.nan, 8.0]})
    got = online_at_step(steps, pd.Series({"a": 3.5}))
    assert math.isnan(got["a"])  # the last update before 3.5 was withheld: no older value is borrowed
    assert online_at_step(steps, pd.Series({"a": 4.2}))["a"] == 8.0
    assert geometric_t([np.nan, 4.0, 16.0]).mean == pytest.approx(8.0)
