"""The critical-batch study's analysis: steps to the target per run, the best lr per B (the one
rule of ``analysis/selection.py``), the fit S(B) = S_min (1 + B_crit / B), repeated on each
seed for its intervals, and the operational critical batch size (``analysis/scaling.py``), the
noise scale at the target (``analysis/noise_scale.py``), and the McCandlish et al., Shallue et al. and Zhang et al. (``studies/critical_batch.py`` declares the runs and the exact noise-scale measurement).

DataFrames in, DataFrames and numbers out; no engine, no JAX.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.findings import (Finding, as_factor, decided, factor_trend, interval, interval_columns,
                                        verdict_from_interval)
from batchlab.analysis.intervals import Interval, geometric_t, none, welch_log
from batchlab.analysis.noise_scale import (exact_band, noise_checkpoints, online_at_step, online_curve,
                                           value_at_epoch, within_factor)
from batchlab.analysis.scaling import fit_critical_batch, operational_batch, per_setting, seed_fits, to_target
from batchlab.analysis.selection import RULE, best_per_batch, edge_warning, grid_edge, run_health
from batchlab.analysis.study_data import StudyData
from batchlab.targets import Target, parse_target
from batchlab.errors import BatchlabError

SOURCE_FIT = "McCandlish et al. 2018; Shallue et al. 2019"
SOURCE_OPERATIONAL = "Zhang et al., ICLR 2025"
SOURCE_NOISE = "McCandlish et al. 2018"
INSTRUMENT = "noise_scale_exact"
# The online estimate's EMA decay (batchlab.instruments.step.noise_scale.DECAY), restated so that
# explaining stored results needs no JAX; tests check the two agree.
ONLINE_EMA_DECAY = 0.99


def label(b: int) -> str:
    """The group label of the runs at batch size ``b`` (the study's grids are labelled so)."""
    return f"B={b}"


def runs_to_target(history: pd.DataFrame, summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """One row per run: group, B, lr, seed, status, steps / samples / epochs / seconds to
    ``target`` (NaN when the run never reached it: a censored run, kept, not dropped), and
    whether the best-run rule lets it be chosen (``usable``, ``why_not``)."""
    reached = to_target(history, target)
    table = summary[["run_id", "group", "batch_size", "lr", "seed", "status", "test_acc"]].merge(reached, on="run_id")
    table["reached"] = table["steps"].notna()
    return table.merge(run_health(history, summary, target), on="run_id")


def per_batch(settings: pd.DataFrame) -> pd.DataFrame:
    """Each B at its best lr (:func:`batchlab.analysis.selection.best_per_batch`), with the share
    of seeds that reached the target at that lr and over all of that B's lrs, whether the best lr
    lies on the edge of the lr grid, and whether the B enters the fit (only if it has a best lr:
    one where every seed is usable and ended at the target)."""
    best = best_per_batch(settings)
    share_all = settings.assign(hits=settings.reached * settings.seeds).groupby("batch_size").agg(
        hits=("hits", "sum"), runs=("seeds", "sum"))
    best["reached_any_lr"] = (share_all.hits / share_all.runs).reindex(best.batch_size).to_numpy()
    best["lr_edge"] = grid_edge(best, settings.lr).to_numpy()
    best["in_fit"] = best.lr.notna()
    return best.sort_values("batch_size").reset_index(drop=True)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    target = parse_target(s["target"])
    runs = runs_to_target(data.history, data.summary, target)
    settings = per_setting(data.summary, data.history, target)
    best = per_batch(settings)
    fitted = best[best.in_fit]
    eligible = settings[settings.usable == 1.0][["batch_size", "lr"]]
    seeds = seed_fits(runs, eligible, excess=s["excess"])
    noise = _noise_tables(data, runs, s)
    fit = _fit_row(fitted, best, seeds, noise["at_target"], s)
    return {"runs": runs, "settings": settings, "per_batch": best, "fit": fit, "seed_fits": seeds, **noise}


def _fit_row(fitted: pd.DataFrame, best: pd.DataFrame, seeds: pd.DataFrame, at_target: pd.DataFrame, s: dict
             ) -> pd.DataFrame:
    """One row: the fit of the seed means, the intervals over seeds (each seed's own fit,
    :func:`batchlab.analysis.scaling.seed_fits`, t on the log scale), the operational B and
    B_simple / B_crit."""
    row = {"s_min": math.nan, "b_crit": math.nan, "excess": s["excess"], "fit_sizes": len(fitted),
           "excluded_sizes": ",".join(str(b) for b in best[~best.in_fit].batch_size), "seeds": len(seeds),
           "failed_seed_fits": int(seeds.b_crit.isna().sum())}
    fit = _try_fit(fitted)
    if fit is not None:
        row.update(s_min=fit.s_min, b_crit=fit.b_crit, e_min=fit.e_min,
                   operational_from_fit=(1 + s["excess"]) * fitted.batch_size.min() + s["excess"] * fit.b_crit)
    for key in ("b_crit", "s_min"):
        row.update(_over_seeds(key, seeds[key]))
    operational = operational_batch(fitted.batch_size, fitted.steps, s["excess"]) if len(fitted) >= 2 else math.nan
    beyond = np.isinf(seeds.operational)
    row.update(operational=operational, operational_beyond_grid=float(beyond.mean()) if len(seeds) else math.nan,
               **_over_seeds("operational", seeds.operational,
                             f"beyond the grid for {int(beyond.sum())} of {len(seeds)} seeds" if beyond.any() else ""))
    # S(B_max) B_max / (S(B_0) B_0): the nominal samples E = B S of the perfect-scaling prediction.
    nominal = (fitted.steps * fitted.batch_size).to_numpy(float)
    row.update(excess_at_largest=nominal[-1] / nominal[0] if len(fitted) >= 2 else math.nan,
               largest_fit_size=int(fitted.batch_size.max()) if len(fitted) else 0,
               **_over_seeds("excess_at_largest", seeds.excess_at_largest))
    b_simple = geometric_t(at_target.b_simple_exact)
    ratio = welch_log(at_target.b_simple_exact, seeds.b_crit)
    row.update(b_simple_at_target=b_simple.mean, b_simple_low=b_simple.low, b_simple_high=b_simple.high,
               b_simple_why=b_simple.why, ratio_why=ratio.why, **interval_columns("ratio", ratio))
    return pd.DataFrame([row])


def _over_seeds(key: str, values: pd.Series, why: str = "") -> dict:
    """``key``'s interval over the seeds' own fits (t on the log scale) as the columns
    ``key_seeds`` (their geometric mean), ``key_low``, ``key_high`` and ``key_why``."""
    iv = none(math.nan, len(values), why) if why else geometric_t(values)
    if not why and values.isna().any():
        iv = none(iv.mean, iv.n, f"the fit failed for {int(values.isna().sum())} of {len(values)} seeds")
    return {f"{key}_seeds": iv.mean, f"{key}_low": iv.low, f"{key}_high": iv.high, f"{key}_why": iv.why}


def _try_fit(fitted: pd.DataFrame):
    """The S(B) fit of the batch sizes in the fit, or None (fewer than 3, or no convergence)."""
    if len(fitted) < 3:
        return None
    try:
        return fit_critical_batch(fitted.batch_size, fitted.steps)
    except (BatchlabError, RuntimeError, ValueError):
        return None


def _noise_tables(data: StudyData, runs: pd.DataFrame, s: dict) -> dict[str, pd.DataFrame]:
    """Exact checkpoint records, their band over seeds, the online per-step estimate, and both
    at the moment each measured run first reaches the target."""
    noise_runs = runs[(runs.group == label(s["noise_batch"])) & np.isclose(runs.lr, s["noise_lr"])]
    ids = set(noise_runs.run_id)
    exact = noise_checkpoints(data.measurements, INSTRUMENT)
    exact = exact[exact.run_id.isin(ids)]
    steps = data.steps[data.steps.run_id.isin(ids)] if len(data.steps) else pd.DataFrame()
    online = online_curve(steps) if len(steps) and "noise_scale" in steps else pd.DataFrame(
        columns=["run_id", "seed", "step", "epoch", "noise_scale", "noise_grad_sq", "noise_trace", "epoch_fraction"])
    by_run = noise_runs.set_index("run_id")
    at_target = pd.DataFrame({
        "seed": by_run.seed, "epochs_to_target": by_run.epochs, "steps_to_target": by_run.steps,
        "b_simple_exact": value_at_epoch(exact, by_run.epochs),
        "b_simple_online": online_at_step(online, by_run.steps) if len(online) else math.nan,
    }).reset_index()
    return {"noise_exact": exact, "noise_band": exact_band(exact) if len(exact) else pd.DataFrame(),
            "noise_online": online, "at_target": at_target}


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, best, fit = tables["runs"], tables["per_batch"], tables["fit"].iloc[0]
    in_fit = best[best.in_fit]
    sizes = [int(b) for b in in_fit.batch_size]
    at_best = [runs[(runs.batch_size == b) & np.isclose(runs.lr, lr)] for b, lr in zip(in_fit.batch_size, in_fit.lr)]
    excluded = f"; left out of the fit (no lr where every seed is usable and ends at the target): " \
               f"B={fit.excluded_sizes}" if fit.excluded_sizes else ""
    out = []
    factor, verdict = factor_trend(sizes, [r.steps for r in at_best], "decreasing")
    out.append(decided(f"with the lr tuned per B, the steps to reach {s['target']} fall as B grows", SOURCE_FIT,
                       f"steps change by a factor {factor.format(3)} per doubling of B over B in {sizes} (geometric "
                       f"means; 95% {factor.method}){excluded}", verdict, factor))
    factor, verdict = factor_trend(sizes, [r.samples for r in at_best], "increasing")
    out.append(decided("beyond the critical batch size, larger batches need more samples (diminishing returns): "
                       "S(B) = S_min (1 + B_crit/B)", SOURCE_FIT,
                       f"samples to target change by a factor {factor.format(3)} per doubling of B; fit of the seed "
                       f"means B_crit = {_fmt(fit.b_crit)}, S_min = {_fmt(fit.s_min)} steps; each seed's own fit: "
                       f"B_crit {_seeds(fit, 'b_crit')}, S_min {_seeds(fit, 's_min')} (geometric mean over "
                       f"{int(fit.seeds)} seeds, 95% t on the log scale)", verdict, factor))
    out.append(_operational_finding(fit))
    out += _noise_findings(tables, s, fit)
    return out


def _operational_finding(fit: pd.Series) -> Finding:
    """Steps at the largest B in the fit above (1 + excess) x the perfect-scaling prediction?"""
    excess = Interval(fit.excess_at_largest_seeds, fit.excess_at_largest_low, fit.excess_at_largest_high,
                      int(fit.seeds), why=fit.excess_at_largest_why or "")
    # The claim holds within the grid if even the interval's low end exceeds 1 + excess at the largest B.
    excess_low, excess_high = (math.log(v / (1 + fit.excess)) if v > 0 else math.nan
                               for v in (excess.low, excess.high))
    from_fit = fit.get("operational_from_fit", math.nan)
    return decided(f"the steps exceed the perfect-scaling prediction S(B_0) B_0/B by {fit.excess:.0%} beyond an "
                   "operational critical batch size (within this grid)", SOURCE_OPERATIONAL,
                   f"operational B = {_fmt(fit.operational)} from the seed means, each seed's own "
                   f"{_seeds(fit, 'operational')}; from the fit {1 + fit.excess:g} B_0 + {fit.excess:g} B_crit = "
                   f"{from_fit:.3g}; at B={fit.largest_fit_size} the steps are {_fmt(fit.excess_at_largest)} × the "
                   f"perfect-scaling prediction (seeds: {excess.format(3)}, 95% t on the log scale over seeds)",
                   verdict_from_interval(excess_low, excess_high, +1), excess)


def _noise_findings(tables: dict[str, pd.DataFrame], s: dict, fit: pd.Series) -> list[Finding]:
    exact, at_target = tables["noise_exact"], tables["at_target"]
    out = []
    growth, epochs = noise_growth(exact)
    out.append(decided("B_simple grows during training (as the loss falls)", SOURCE_NOISE,
                       f"exact B_simple at epochs {epochs} of the B={s['noise_batch']}, lr {s['noise_lr']:g} runs "
                       f"changes by a factor {growth.format(3)} per doubling of the epoch (each run's slope of "
                       f"log2 B_simple on log2 epoch, 95% t over {growth.n} runs)",
                       verdict_from_interval(math.log(growth.low) if growth.low > 0 else math.nan,
                                             math.log(growth.high) if growth.high > 0 else math.nan, +1), growth))
    ratio = Interval(fit.ratio, fit.ratio_low, fit.ratio_high, int(fit.seeds), why=fit.ratio_why or "")
    online = geometric_t(at_target.b_simple_online)
    exact_iv = Interval(fit.b_simple_at_target, fit.b_simple_low, fit.b_simple_high, len(at_target),
                        why=fit.b_simple_why or "")
    out.append(decided("B_simple measured during training predicts B_crit to within an order of magnitude "
                       "(ratio within [0.1, 10])", SOURCE_NOISE,
                       f"B_simple when the runs reach the target: exact {exact_iv.format(3)}, online two-batch "
                       f"{online.format(3)} ({online.n} of {len(at_target)} runs not withheld there; geometric means, "
                       f"95% t on the log scale); B_crit of each seed's fit {_seeds(fit, 'b_crit')}; ratio of "
                       f"geometric means B_simple/B_crit = {ratio.format(3)} (95% Welch t on the log scale)",
                       within_factor(ratio, 10), ratio))
    pair = at_target.dropna(subset=["b_simple_exact", "b_simple_online"])
    agreement = geometric_t(pair.b_simple_online / pair.b_simple_exact)
    out.append(decided("the online two-batch estimate (EMAs of |G|² and tr(Σ), then divided) measures the "
                       "same B_simple as the exact per-sample computation, within a factor of 2", SOURCE_NOISE,
                       f"online / exact when the runs reach the target: {agreement.format(3)} (geometric mean over "
                       f"{agreement.n} runs, 95% t on the log scale)", within_factor(agreement, 2), agreement))
    return out


def noise_growth(exact: pd.DataFrame) -> tuple[Interval, list[int]]:
    """How B_simple grows during training: each run's least-squares slope of log2 B_simple
    against log2 epoch (checkpoints from epoch 1 on), t-interval over runs, as the factor
    2^slope per doubling of the epoch. A run's checkpoints are repeated measures of one run,
    so the run, not the checkpoint, is the replicate; the log scale keeps one large value from
    swamping the rest (``science.md`` 7b)."""
    later = exact[(exact.epoch >= 1) & (exact.noise_scale > 0)]
    epochs = sorted(int(e) for e in later.epoch.unique())
    slopes = [np.polyfit(np.log2(run.epoch.to_numpy(float)), np.log2(run.noise_scale.to_numpy(float)), 1)[0]
              for _, run in later.groupby("run_id") if run.epoch.nunique() >= 2]
    return as_factor(interval(slopes)), epochs


def _fmt(v: float) -> str:
    return "beyond the grid" if v == math.inf else f"{v:.3g}"


def _seeds(fit: pd.Series, key: str) -> str:
    """The geometric mean of the seeds' own ``key`` with its interval, or why there is none."""
    iv = Interval(fit[f"{key}_seeds"], fit[f"{key}_low"], fit[f"{key}_high"], int(fit.seeds),
                  why=fit[f"{key}_why"] or "")
    return iv.format(3)


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    best, fit, settings = tables["per_batch"], tables["fit"].iloc[0], tables["settings"]
    out = [f"Target {s['target']} (training loss, evaluated on the full training set after every epoch): the "
           "noise-scale theory speaks of the training loss, and it is smoother than test accuracy on 360 test "
           "images. Steps to target are interpolated linearly between the two epochs around the crossing, so at "
           "small B (many steps per epoch) they are coarse.",
           "Every update uses exactly B samples (the partial last batch of each epoch is dropped, MATLAB-style; "
           "the dropped rows change every epoch), so samples = B × steps as the fit assumes.",
           f"Learning rate tuned per B over {', '.join(f'{lr:g}' for lr in s['lrs'])}; momentum fixed at "
           f"{s['momentum']:g} (Shallue et al. tune it too). Runs that never reach the target are censored, "
           "not dropped: a B enters the fit only if it has a best lr. The best lr per B is chosen on the same "
           "runs whose steps are fitted (stated: the selection is not tested on other data); the intervals "
           "repeat that choice and the fit on each seed alone, so they include its variability."]
    out.append(f"The best-run rule: {RULE}.")
    edge = edge_warning(best, settings.lr)
    if edge:
        out.append(edge[:1].upper() + edge[1:] + ".")
    censored = settings[settings.reached < 1]
    out.append(f"{len(censored)} of {len(settings)} (B, lr) settings have at least one seed that never reached "
               f"the target; share reaching at each B's best lr: " + ", ".join(
                   f"B={b}: {r:.0%}" for b, r in zip(best.batch_size, best.reached)) + ".")
    out += _noise_notes(tables, s)
    if math.isfinite(fit.b_crit):
        out.append(f"Reading the fit: doubling B below B_crit ≈ {fit.b_crit:.0f} nearly halves the steps (perfect "
                   "scaling); well above it, it buys almost nothing. Perfect scaling means constant samples to "
                   "target (the flat dotted line on the right).")
    return out


def _noise_notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    """How B_simple is measured (exact and online), and how far the online estimate lags."""
    best, out = tables["per_batch"], []
    at_noise = best[best.batch_size == s["noise_batch"]]
    if len(at_noise):
        best_lr = float(at_noise.lr.iloc[0])
        same = "is" if math.isclose(best_lr, s["noise_lr"]) else f"is not (the best is {best_lr:g})"
        out.append(f"B_simple is measured on the runs at B={s['noise_batch']}, lr {s['noise_lr']:g}, which {same} "
                   f"that B's best lr. Exact: from the per-sample gradients of {s['pool']} training rows at most, at "
                   f"epochs {', '.join(map(str, s['noise_epochs']))}; its value when a run reaches the target is "
                   "interpolated in log between checkpoints. Online: two halves of every batch, EMAs of numerator "
                   f"and denominator (decay {ONLINE_EMA_DECAY:g}), withheld (NaN) while |G|² is not clearly "
                   "above zero. With momentum, B_simple is still the SGD noise statistic tr(Σ)/|G|² of "
                   "the parameters reached.")
    online = tables["noise_online"]
    if len(online):
        per_epoch = online.groupby(["run_id", "epoch"]).step.count().median()
        memory = 1 / (1 - ONLINE_EMA_DECAY)
        out.append(f"The online estimate's EMAs remember about 1/(1 − {ONLINE_EMA_DECAY:g}) = {memory:.0f} "
                   f"updates, i.e. {memory / per_epoch:.1f} epochs at B={s['noise_batch']}: while "
                   "|G|² falls it reports an older, larger |G|², so it lags the exact value at the same epoch.")
    return out
