"""Each statistical defect of issue 22, as a test on small made-up tables (no training): the
intervals respect what they measure, none is degenerate, the doubled series is read once, and
every verdict follows its claim's own form and preconditions and names its method."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from batchlab.analysis import convex, critical_batch, distance, epochs, generalization, optimizer
from batchlab.analysis.curves import late_mean, late_variability
from batchlab.analysis.findings import Interval, difference, interval, trend
from batchlab.analysis.gradient_statistics import theory_check
from batchlab.analysis.noise_scale import exact_band
from batchlab.analysis.throughput import per_batch as throughput_per_batch
from batchlab.studies import get_study

NUMBER = r"-?[\d.]+(?:e[-+]?\d+)?"


def bounds_after(text: str, label: str) -> tuple[float, float]:
    """The [low, high] printed right after ``label`` in a finding's text."""
    plain = re.sub(r"(\d),(\d{3})", r"\1\2", text)  # 13,021 -> 13021
    match = re.search(re.escape(label) + rf" {NUMBER} \[({NUMBER}), ({NUMBER})\]", plain)
    assert match, (label, text)
    return float(match.group(1)), float(match.group(2))


# ----------------------------------------------------------------- intervals within their range

def epoch_pairs(stops=(1, 20), budget=20) -> pd.DataFrame:
    """Two seeds of one batch size: one early-stopped at epoch 1, one that ran its budget."""
    rows = []
    for seed, stop in enumerate(stops):
        rows.append(dict(batch_size=16, seed=seed, budget=budget, best_epoch=max(stop - 4, 1), best_updates=100 * stop,
                         full_updates=2000, full_test_acc=0.6 + 0.01 * seed, full_last_loss=1.2 + 0.1 * seed,
                         full_min_loss=1.0, status="early_stopped", stop_epoch=stop, restored_epoch=max(stop - 4, 1),
                         early_updates=100 * stop, early_test_acc=0.55 + 0.05 * seed, early_test_loss=1.1,
                         stopped=stop < budget, late_slope=0.01 + 0.005 * seed))
    pairs = pd.DataFrame(rows)
    pairs["epochs_saved"] = pairs.budget - pairs.stop_epoch
    pairs["frac_saved"] = pairs.epochs_saved / pairs.budget
    pairs["updates_saved"] = pairs.full_updates - pairs.early_updates
    pairs["acc_change"] = pairs.early_test_acc - pairs.full_test_acc
    pairs["loss_rise"] = pairs.full_last_loss - pairs.full_min_loss
    return pairs


def test_epochs_stop_epoch_saved_share_and_updates_stay_within_their_bounds():
    s = get_study("epochs").settings(quick=True)
    text = epochs.findings({"pairs": epoch_pairs()}, s)[0].measured
    low, high = bounds_after(text, "stops at epoch")
    assert 1 <= low and high <= 20  # was [-14.4, 36.4] of 20
    low, high = bounds_after(text, "saves")
    assert 0 <= low and high <= 100  # was [-82, 170] %
    low, _ = bounds_after(text, "epochs =")
    assert low >= 0  # no negative update counts


def test_accuracies_stay_within_zero_and_one():
    s = get_study("optimizer").settings(quick=True)
    rows = [dict(optimizer=o, batch_size=512, lr=lr, seed=seed, test_acc=acc, final_norm=9.0 + 0.1 * seed,
                 norm_ratio=1.0 + 0.01 * seed)
            for o, lr, accs in (("adam", s["adam_lr"], (0.40, 0.45)), ("sgd", s["sgd_lrs"][0], (0.03, 0.30)),
                                ("sgd", s["sgd_lrs"][1], (0.80, 0.999)))
            for seed, acc in enumerate(accs)]
    found = optimizer.findings({"runs": pd.DataFrame(rows)}, s)
    low, high = bounds_after(found[2].measured, "SGD")
    assert low >= 0 and high <= 1  # was [-0.099, 0.43]
    assert bounds_after(found[5].measured, "SGD")[1] <= 1  # was 1.004


def test_positive_quantities_have_positive_intervals():
    exact = pd.DataFrame({"run_id": ["a", "b"], "epoch": [4, 4], "noise_scale": [30.0, 2000.0],
                          "grad_sq": [0.02, 1.5], "trace": [60.0, 61.0]})
    band = exact_band(exact).iloc[0]
    assert band.noise_scale_low > 0 and band.grad_sq_low > 0  # were -1,160 and -0.66
    runs = pd.DataFrame({"batch_size": [32, 32], "lr": 0.1, "seed": [0, 1], "reached": True, "compile_seconds": 1.0,
                         "throughput": [6e4, 7e4], "seconds_per_step": [1e-3, 2e-3], "seconds_per_epoch": [0.1, 0.2],
                         "seconds_to_target": [0.01, 0.2], "steps_to_target": [40.0, 90.0]})
    assert throughput_per_batch(runs).seconds_to_target_low.iloc[0] > 0  # seconds below zero before


def convex_runs(slope: float = 2.0) -> pd.DataFrame:
    """Per run: distance and loss gap at B = 1, 16 and N = 500 (two seeds; B = N one deterministic
    computation repeated), the squared distance growing like the noise term ** ``slope``."""
    rows = []
    for b, noise in ((1, 1.0), (16, 0.06), (500, 0.0)):
        for seed in range(2):
            sq = (noise ** slope if noise else 3.5e-6) * (1 + 0.05 * seed if noise else 1 + 1e-7 * seed)
            rows.append(dict(batch_size=b, seed=seed, noise_term=noise, b_over_n=b / 500, epochs=30, steps=4000,
                             time_constants=40.0, sq_distance=sq, distance=math.sqrt(sq),
                             loss_gap=[0.01, 0.55][seed] if b == 1 else sq / 10))
    return pd.DataFrame(rows)


def test_convex_loss_gap_is_positive_and_full_batch_is_one_computation():
    runs = convex_runs()
    table = convex.by_batch(runs).set_index("batch_size")
    assert table.loss_gap_low.loc[1] > 0  # was [-0.94, 1.5] nats
    assert np.isnan(table.distance_low.loc[500])  # B = N: no interval from float rounding


# ----------------------------------------------------------------- degenerate and mis-sized intervals

def test_zero_spread_is_not_certainty():
    assert math.isnan(interval([0.333, 0.333]).low)  # was 0.333 [0.333, 0.333]
    assert math.isnan(difference([0.5, 0.5], [0.2, 0.2]).low)  # was [0.3, 0.3], "agrees"
    assert trend([16, 64], [[0.4, 0.4], [0.2, 0.2]], "decreasing")[1] == "inconclusive"


def test_a_narrow_interval_prints_its_bounds_apart():
    assert Interval(1.0, 0.9995, 1.0005, 3).format() != "1 [1, 1]"


# ----------------------------------------------------------------- the doubled Brownlee series

def test_a_run_in_two_groups_is_read_once():
    rng = np.random.default_rng(0)
    one = pd.DataFrame({"run_id": "r", "group": "B=32", "epoch": np.arange(101),
                        "test_acc": rng.uniform(0.7, 0.9, 101)})
    doubled = pd.concat([one, one.assign(group="sweep")], ignore_index=True)  # one row per group the run is in
    assert late_variability(doubled, "test_acc", 50)["r"] == pytest.approx(late_variability(one, "test_acc", 50)["r"])
    assert late_mean(doubled, "test_acc", 50)["r"] == pytest.approx(one.test_acc.iloc[-50:].mean())


# ----------------------------------------------------------------- verdicts against their own claims

def convex_tables(slope: float) -> dict:
    runs = convex_runs(slope)
    table = convex.by_batch(runs)
    law = table[table.noise_term > 0]
    return {"runs": runs, "by_batch": table, "noise_law": law, "optimum": pd.DataFrame({"n_train": [500]})}


def test_a_slope_of_two_does_not_agree_with_a_law_of_slope_one():
    s = get_study("convex").settings(quick=True)
    runs = convex_runs(2.0)
    runs.loc[runs.batch_size == 16, "sq_distance"] *= [1.0, 1.1]  # spread at every B
    tables = {**convex_tables(2.0), "runs": runs}
    law = [f for f in convex.findings(tables, s) if "slope 1" in f.claim]
    assert law and all(f.verdict == "disagrees" for f in law)
    full = [f for f in convex.findings(tables, s) if "full-batch" in f.claim][0]
    assert "deterministic" in full.measured


def test_overfitting_can_come_out_against():
    """A test loss still falling at the end of training is no overfitting: the finding must be
    able to say so (last minus best is never negative, so it could not)."""
    s = get_study("epochs").settings(quick=True)
    history, summary = [], []
    for b in (64, 16):
        for seed in range(3):
            for arm, label in (("full", "full budget"), ("early", "early stopping")):
                run = f"{arm}-{9 - seed}-{b}"  # run ids in another order than (B, seed): the pairs must align
                loss = 2.0 * 0.9 ** np.arange(21) + 0.01 * seed  # falls to the last epoch
                if b == 64:
                    loss = loss + 0.08 * np.maximum(np.arange(21) - 8, 0)  # turns up after epoch 8
                history += [dict(run_id=run, group=f"{label}, B={b}", batch_size=b, epoch=e, step=10 * e,
                                 test_loss=loss[e], test_acc=0.5, train_loss=loss[e], train_acc=0.5) for e in range(21)]
                summary.append(dict(run_id=run, group=f"{label}, B={b}", batch_size=b, seed=seed, epochs=20,
                                    epochs_done=20, steps=200, test_acc=0.5, test_loss=loss[-1], status="finished",
                                    best_epoch=20))
    from batchlab.analysis.study_data import StudyData

    tables = epochs.analyse(StudyData(pd.DataFrame(history), pd.DataFrame(summary), pd.DataFrame(),
                                      pd.DataFrame(), []), s)
    pairs = tables["pairs"]
    assert (pairs.full_run_id == [f"full-{9 - seed}-{b}" for b, seed in zip(pairs.batch_size, pairs.seed)]).all()
    overfit = {f.claim[:5]: f.verdict for f in epochs.findings(tables, s) if "overfitting" in f.claim}
    assert overfit == {"B=16:": "disagrees", "B=64:": "agrees"}


def test_matching_a_theory_needs_an_equivalence_not_a_failure_to_reject():
    """20 noisy trials whose mean is 25% off the theory: the interval covers the theory only
    because it is wide. That is inconclusive, not agreement."""
    rng = np.random.default_rng(0)
    trials = pd.DataFrame({"epoch": 1, "batch_size": 1, "sq_norm_sum": rng.exponential(1.25, 20)})
    table = theory_check(trials, pd.DataFrame({"epoch": [1], "batch_size": [1], "theory_sq_norm": [1.0]}), 0.1)
    assert table.covered.iloc[0] and table.equivalent.iloc[0] == "inconclusive"


def test_noise_scale_growth_is_judged_on_the_log_scale_per_run():
    """Three runs whose B_simple doubles per doubling of the epoch, one of them ten times larger:
    on the raw scale that one run's spread hides the growth; per run on the log scale it is clear."""
    rows = [dict(run_id=r, epoch=e, noise_scale=scale * e * (1 + 0.05 * k))
            for r, scale in (("a", 10.0), ("b", 12.0), ("c", 100.0)) for k, e in enumerate((1, 2, 4, 8))]
    growth, epochs_used = critical_batch.noise_growth(pd.DataFrame(rows))
    assert epochs_used == [1, 2, 4, 8] and growth.low > 1.8 and growth.high < 2.3
    raw = [pd.DataFrame(rows).query("epoch == @e").noise_scale for e in (1, 2, 4, 8)]
    assert trend((1, 2, 4, 8), raw, "increasing")[1] == "inconclusive"


def made_up_generalization(test_acc: dict, gap_noise: float = 0.0, seeds: int = 3) -> dict:
    rng = np.random.default_rng(1)
    rows = []
    for b, acc in test_acc.items():
        for seed in range(seeds):
            gap = 0.1 + 0.05 * np.log2(b) + rng.normal(0, gap_noise)
            test = acc + rng.normal(0, 0.01)
            sharp = np.exp(3 * gap)
            rows.append(dict(run_id=f"{b}-{seed}", group="g", batch_size=b, seed=seed, steps=10, epochs_done=10,
                             samples_seen=10240, train_acc=0.995, test_acc=test, gap_acc=gap, lambda_max=sharp,
                             hessian_trace=10 * sharp, eps_sharpness=sharp))
    runs = pd.DataFrame(rows)
    table = generalization.by_batch(runs, ("train_acc", "test_acc", "gap_acc", *generalization.MEASURES))
    return {"runs": runs, "by_batch": table, "correlations": generalization.correlations(runs, generalization.MEASURES)}


def finding_starting(found, start):
    return [f for f in found if f.claim.startswith(start)][0]


def test_a_sweet_spot_at_the_grids_edge_is_not_a_sweet_spot():
    s = get_study("generalization").settings()
    found = generalization.findings(made_up_generalization({16: 0.7, 64: 0.66, 256: 0.6, 1024: 0.5}), s)
    spot = finding_starting(found, "there is a sweet spot")
    assert spot.verdict == "inconclusive" and "edge" in spot.reason  # was "agrees" for the smallest B


def test_sharpness_and_gap_are_associated_over_batch_sizes_not_runs():
    """Four batch sizes, three seeds each: 12 runs, but 4 points of evidence; no ordering of 4
    points is significant at 2.5% one-sided (the smallest p is 1/24)."""
    s = get_study("generalization").settings()
    found = generalization.findings(made_up_generalization({16: 0.6, 64: 0.7, 256: 0.65, 1024: 0.5}), s)
    rho = finding_starting(found, "sharpness (Hessian lambda_max) predicts")
    assert rho.verdict == "inconclusive" and "1/4!" in rho.reason  # was "agrees" over 12 runs
    found = generalization.findings(made_up_generalization({16: 0.6, 64: 0.7, 256: 0.65, 1024: 0.55, 4096: 0.5}), s)
    assert finding_starting(found, "sharpness (Hessian lambda_max) predicts").verdict == "agrees"


def test_a_gap_is_not_called_before_the_training_set_is_fitted():
    s = get_study("generalization").settings(quick=True)
    tables = made_up_generalization({16: 0.6, 256: 0.5, 4000: 0.12})
    tables["runs"]["train_acc"] = [0.63, 0.64, 0.65, 0.38, 0.39, 0.40, 0.12, 0.13, 0.126]
    for f in generalization.findings(tables, s):
        assert f.verdict == "inconclusive" and "fit the training set" in f.reason


def test_spread_on_two_scales_that_disagree_is_inconclusive():
    """The std falls with B while the std relative to the (falling) mean rises."""
    s = get_study("distance").settings(quick=True)
    rng = np.random.default_rng(2)
    of = {b: pd.DataFrame({"dist_budget": mean + sd * rng.standard_normal(8)})
          for b, mean, sd in ((32, 4.0, 0.2), (256, 0.7, 0.1), (1024, 0.3, 0.08))}
    found = distance._spread_finding(of, [32, 256, 1024], s)
    assert found.verdict == "inconclusive" and "scale" in found.reason


# ----------------------------------------------------------------- methods named as computed

def test_methods_are_named_as_computed():
    from batchlab.analysis.gradient_norm import _mean_falls, _sum_grows
    from batchlab.plots.convex import noise_law_figure

    rng = np.random.default_rng(0)
    at = pd.DataFrame({"batch_size": np.repeat([1, 4, 16], 50), "norm_sum": rng.uniform(1, 2, 150)})
    for found in (_sum_grows(at, 1), _mean_falls(at, 1)):  # a Welch-Satterthwaite t, once called "bootstrap"
        assert "bootstrap" not in found.measured and "Welch-Satterthwaite" in found.measured
    law = convex_tables(1.0)["noise_law"].assign(slope=1.0, slope_low=0.9, slope_high=1.1, intercept=0.0)
    fig = noise_law_figure(law, 10, "law")
    assert not any("bootstrap" in t.get_text() for t in fig.texts)
