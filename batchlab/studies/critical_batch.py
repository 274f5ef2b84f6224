"""Critical batch size: steps to a target vs B with the lr tuned per B, and whether the simple
noise scale measured during training predicts it (``science.md`` sections 4 and 7).

Digits (1437 train / 360 test), MLP 64-64(relu)-10, SGD with momentum 0.9, batch-mean
cross-entropy; the partial last batch of an epoch is dropped, so every step uses exactly B
samples and E = B S holds. For every B in 8..1024 and every lr of a grid, several seeds train
for about ``step_budget`` updates (at most ``max_epochs`` epochs). Per run: the steps to the target (censored when never
reached); per B: the best lr (fewest mean steps among the lrs where every seed reached);
then the fit S(B) = S_min (1 + B_crit / B) with bootstrap intervals (McCandlish et al. 2018;
Shallue et al. 2019), and the operational critical batch size, where steps exceed perfect
scaling by 20% (Zhang et al. 2025). The runs at ``noise_batch`` also record the online
two-batch estimate of B_simple every step; those at ``noise_lr`` are measured exactly at
checkpoints (per-sample gradients over a pool of training rows, via their Gram matrix).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab import budget
from batchlab.analysis.critical_batch import (bootstrap_fit, exact_band, noise_checkpoints, online_at_step,
                                              geometric_interval, online_curve, operational_batch, per_batch,
                                              percentile_interval,
                                              ratio_samples, runs_to_target, value_at_epoch, within_factor)
from batchlab.analysis.findings import Finding, Interval, trend, verdict_from_interval
from batchlab.analysis.scaling import fit_critical_batch, per_setting, to_target
from batchlab.analysis.targets import parse_target
from batchlab.errors import BatchlabError
from batchlab.studies.base import Checkpoint, CheckpointInstrument, FigureSpec, Grid, Study, StudyData

SOURCE_FIT = "McCandlish et al. 2018; Shallue et al. 2019"
SOURCE_OPERATIONAL = "Zhang et al., ICLR 2025"
SOURCE_NOISE = "McCandlish et al. 2018"
INSTRUMENT = "noise_scale_exact"
# The online estimate's EMA decay (batchlab.engine.step_stats.NOISE_EMA), restated so that
# explaining stored results needs no JAX; tests check the two agree.
ONLINE_EMA_DECAY = 0.99


def n_train(s: dict) -> int:
    """Training rows of the study's data (sets each B's epoch count from the step budget)."""
    from batchlab.data import load_dataset, resolve_data_config

    return load_dataset(resolve_data_config(s["data"])).n_train


def epochs_for(b: int, n: int, s: dict) -> int:
    """Epochs that give about ``step_budget`` updates at batch size B, capped at ``max_epochs``
    (large batches need few steps but many epochs; small ones the reverse)."""
    epochs = min(s["max_epochs"], math.ceil(s["step_budget"] / budget.steps_per_epoch(n, b, drop_last=True)))
    if b == s["noise_batch"]:
        epochs = max(epochs, max(s["noise_epochs"]))
    return max(epochs, 1)


def label(b: int) -> str:
    return f"B={b}"


def grids(s: dict) -> list[Grid]:
    if s["noise_batch"] not in s["batch_sizes"]:
        raise BatchlabError(f"noise_batch={s['noise_batch']} must be one of batch_sizes {s['batch_sizes']}")
    if not any(math.isclose(s["noise_lr"], lr) for lr in s["lrs"]):
        raise BatchlabError(f"noise_lr={s['noise_lr']} must be one of lrs {s['lrs']}")
    n = n_train(s)
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), momentum=s["momentum"],
                  lr=list(s["lrs"]), seeds=s["seeds"], drop_last=True)
    out = []
    for b in sorted(s["batch_sizes"]):
        extra = dict(instruments=["noise_scale"]) if b == s["noise_batch"] else {}
        out.append(Grid(label(b), dict(common, batch_size=b, epochs=epochs_for(b, n, s), **extra)))
    return out


def measure_exact(cp: Checkpoint) -> list[dict]:
    """|G|^2, tr(Sigma) and B_simple from the per-sample gradients of a pool of training rows
    (:func:`batchlab.instruments.gradients.statistics_from_gram`); only the ``noise_lr`` runs
    are measured (the others return no record, which also marks them as done)."""
    if not math.isclose(cp.config.optimizer.lr, cp.settings["noise_lr"]):
        return []
    import jax.numpy as jnp

    from batchlab.instruments.gradients import gram_matrix, statistics_from_gram

    n = cp.dataset.n_train
    size = min(n, cp.settings["pool"])
    rows = np.sort(np.random.default_rng(0).choice(n, size, replace=False)) if size < n else np.arange(n)
    k = gram_matrix(cp.model, cp.params, {}, jnp.asarray(cp.dataset.x_train[rows]),
                    jnp.asarray(cp.dataset.y_train[rows]))
    return [statistics_from_gram(k)]


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    return [CheckpointInstrument(INSTRUMENT, tuple(s["noise_epochs"]), measure_exact, grids=(label(s["noise_batch"]),))]


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    target = parse_target(s["target"])
    runs = runs_to_target(data.history, data.summary, target)
    settings = per_setting(data.summary, to_target(data.history, target))
    best = per_batch(settings)
    fitted = best[best.in_fit]
    eligible = settings[settings.reached == 1.0][["batch_size", "lr"]]
    boot = bootstrap_fit(runs, eligible, s["resamples"], excess=s["excess"])
    noise = _noise_tables(data, runs, s)
    fit = _fit_row(fitted, best, boot, noise["at_target"], s)
    return {"runs": runs, "settings": settings, "per_batch": best, "fit": fit, **noise}


def _fit_row(fitted: pd.DataFrame, best: pd.DataFrame, boot, at_target: pd.DataFrame, s: dict) -> pd.DataFrame:
    """One row: the fit, its bootstrap intervals, the operational B and B_simple / B_crit."""
    row = {"s_min": math.nan, "b_crit": math.nan, "excess": s["excess"], "fit_sizes": len(fitted),
           "excluded_sizes": ",".join(str(b) for b in best[~best.in_fit].batch_size), "resamples": len(boot.b_crit),
           "failed_refits": int(np.isnan(boot.b_crit).sum())}
    fit = _try_fit(fitted)
    if fit is not None:
        row.update(s_min=fit.s_min, b_crit=fit.b_crit, e_min=fit.e_min,
                   operational_from_fit=(1 + s["excess"]) * fitted.batch_size.min() + s["excess"] * fit.b_crit)
    for key, point, samples in (("b_crit", row["b_crit"], boot.b_crit), ("s_min", row["s_min"], boot.s_min)):
        iv = percentile_interval(point, samples)
        row.update({f"{key}_low": iv.low, f"{key}_high": iv.high})
    operational = operational_batch(fitted.batch_size, fitted.steps, s["excess"]) if len(fitted) >= 2 else math.nan
    iv = percentile_interval(operational, boot.operational)
    row.update(operational=operational, operational_low=iv.low, operational_high=iv.high,
               operational_beyond_grid=float(np.mean(np.isinf(boot.operational))))
    # S(B_max) B_max / (S(B_0) B_0): the nominal samples E = B S of the perfect-scaling prediction.
    nominal = (fitted.steps * fitted.batch_size).to_numpy(float)
    excess = nominal[-1] / nominal[0] if len(fitted) >= 2 else math.nan
    iv = percentile_interval(excess, boot.excess_at_largest)
    row.update(excess_at_largest=excess, excess_at_largest_low=iv.low, excess_at_largest_high=iv.high,
               largest_fit_size=int(fitted.batch_size.max()) if len(fitted) else 0)
    b_simple = geometric_interval(at_target.b_simple_exact)
    iv = percentile_interval(b_simple.mean / row["b_crit"], ratio_samples(at_target.b_simple_exact, boot.b_crit))
    row.update(b_simple_at_target=b_simple.mean, b_simple_low=b_simple.low, b_simple_high=b_simple.high,
               ratio=iv.mean, ratio_low=iv.low, ratio_high=iv.high)
    return pd.DataFrame([row])


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
    excluded = f"; left out of the fit (not every seed reached at any lr): B={fit.excluded_sizes}" \
        if fit.excluded_sizes else ""
    out = []
    slope, verdict = trend(sizes, [r.steps for r in at_best], "decreasing")
    out.append(Finding(f"with the lr tuned per B, the steps to reach {s['target']} fall as B grows", SOURCE_FIT,
                       f"slope {slope.format(3)} steps per doubling of B over B in {sizes}{excluded}", verdict))
    slope, verdict = trend(sizes, [r.samples for r in at_best], "increasing")
    out.append(Finding("beyond the critical batch size, larger batches need more samples (diminishing returns): "
                       "S(B) = S_min (1 + B_crit/B)", SOURCE_FIT,
                       f"samples to target: slope {slope.format(3)} per doubling of B; fit B_crit = "
                       f"{_bounds(fit.b_crit, fit.b_crit_low, fit.b_crit_high)}, S_min = "
                       f"{_bounds(fit.s_min, fit.s_min_low, fit.s_min_high)} steps "
                       f"(bootstrap 95%, {fit.resamples} seed resamples)", verdict))
    # The claim holds within the grid if even the interval's low end exceeds 1 + excess at the largest B.
    excess_low, excess_high = (math.log(v / (1 + fit.excess)) if v > 0 else math.nan
                               for v in (fit.excess_at_largest_low, fit.excess_at_largest_high))
    operational = _bounds(fit.operational, fit.operational_low, fit.operational_high)
    at_largest = _bounds(fit.excess_at_largest, fit.excess_at_largest_low, fit.excess_at_largest_high)
    from_fit = fit.get("operational_from_fit", math.nan)
    out.append(Finding(f"the steps exceed the perfect-scaling prediction S(B_0) B_0/B by {fit.excess:.0%} beyond an "
                       "operational critical batch size (within this grid)", SOURCE_OPERATIONAL,
                       f"operational B = {operational} (bootstrap 95%; {fit.operational_beyond_grid:.0%} of resamples "
                       f"beyond the grid); from the fit {1 + fit.excess:g} B_0 + {fit.excess:g} B_crit = "
                       f"{from_fit:.3g}; at B={fit.largest_fit_size} the steps are {at_largest} x the perfect-scaling "
                       "prediction", verdict_from_interval(excess_low, excess_high, +1)))
    out += _noise_findings(tables, s, fit)
    return out


def _noise_findings(tables: dict[str, pd.DataFrame], s: dict, fit: pd.Series) -> list[Finding]:
    exact, at_target = tables["noise_exact"], tables["at_target"]
    out = []
    later = exact[exact.epoch >= 1]
    epochs = sorted(int(e) for e in later.epoch.unique())
    slope, verdict = trend(epochs, [later[later.epoch == e].noise_scale for e in epochs], "increasing")
    out.append(Finding("B_simple grows during training (as the loss falls)", SOURCE_NOISE,
                       f"exact B_simple at epochs {epochs} of the B={s['noise_batch']}, lr {s['noise_lr']:g} runs: "
                       f"slope {slope.format(3)} per doubling of the epoch", verdict))
    ratio = Interval(fit.ratio, fit.ratio_low, fit.ratio_high, int(fit.resamples))
    online = geometric_interval(at_target.b_simple_online)
    out.append(Finding("B_simple measured during training predicts B_crit to within an order of magnitude "
                       "(ratio within [0.1, 10])", SOURCE_NOISE,
                       f"B_simple when the runs reach the target: exact "
                       f"{_bounds(fit.b_simple_at_target, fit.b_simple_low, fit.b_simple_high)}, online two-batch "
                       f"{online.format(3)} ({online.n} of {len(at_target)} runs not withheld there; geometric means, "
                       f"95% t on log scale); B_crit {fit.b_crit:.3g}; ratio B_simple/B_crit = "
                       f"{_bounds(fit.ratio, fit.ratio_low, fit.ratio_high)} (95%, B_crit bootstrap x B_simple t)",
                       within_factor(ratio, 10)))
    pair = at_target.dropna(subset=["b_simple_exact", "b_simple_online"])
    agreement = geometric_interval(pair.b_simple_online / pair.b_simple_exact)
    out.append(Finding("the online two-batch estimate (EMAs of |G|^2 and tr(Sigma), then divided) measures the "
                       "same B_simple as the exact per-sample computation, within a factor of 2", SOURCE_NOISE,
                       f"online / exact when the runs reach the target: {agreement.format(3)} (geometric mean over "
                       f"{agreement.n} runs, 95% t on log scale)", within_factor(agreement, 2)))
    return out


def _bounds(point: float, low: float, high: float) -> str:
    def fmt(v: float) -> str:
        return "beyond the grid" if v == math.inf else f"{v:.3g}"
    if math.isnan(low) or math.isnan(high):
        return f"{fmt(point)} (no interval)"
    return f"{fmt(point)} [{fmt(low)}, {fmt(high)}]"


def _title(s: dict) -> str:
    return (f"{s['data']} MLP {'-'.join(str(h) for h in s['hidden'])}, SGD momentum {s['momentum']:g}, "
            f"lr tuned per B over {len(s['lrs'])} values, {s['seeds']} seeds")


def _to_target(tables, s):
    from batchlab.plots.critical_batch import to_target_with_intervals

    return to_target_with_intervals(tables["per_batch"], tables["fit"].iloc[0], s["target"], _title(s))


def _noise(tables, s):
    from batchlab.plots.critical_batch import noise_over_training

    crossing = tables["at_target"].epochs_to_target.mean()
    title = (f"{_title(s).split(', lr')[0]}: B_simple over training of the runs at B={s['noise_batch']}, "
             f"lr {s['noise_lr']:g} ({s['seeds']} seeds); exact on a pool of <= {s['pool']} training rows")
    return noise_over_training(tables["noise_band"], tables["noise_exact"], tables["noise_online"],
                               tables["fit"].iloc[0], crossing, title)


def _heatmap(tables, s):
    from batchlab.plots.critical_batch import reached_heatmap

    return reached_heatmap(tables["settings"], tables["per_batch"], s["target"], _title(s))


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    best, fit, settings = tables["per_batch"], tables["fit"].iloc[0], tables["settings"]
    out = [f"Target {s['target']} (training loss, evaluated on the full training set after every epoch): the "
           "noise-scale theory speaks of the training loss, and it is smoother than test accuracy on 360 test "
           "images. Steps to target are interpolated linearly between the two epochs around the crossing, so at "
           "small B (many steps per epoch) they are coarse.",
           "Every update uses exactly B samples (the partial last batch of each epoch is dropped, MATLAB-style; "
           "the dropped rows change every epoch), so samples = B x steps as the fit assumes.",
           f"Learning rate tuned per B over {', '.join(f'{lr:g}' for lr in s['lrs'])}; momentum fixed at "
           f"{s['momentum']:g} (Shallue et al. tune it too). Runs that never reach the target are censored, "
           "not dropped: a B enters the fit only if every seed reached the target at its best lr."]
    edge = best[best.lr_edge != ""]
    if len(edge):
        out.append("The best lr lies on the edge of the lr grid at " + ", ".join(
            f"B={b} ({side})" for b, side in zip(edge.batch_size, edge.lr_edge)) +
            ": a wider grid might find fewer steps there.")
    censored = settings[settings.reached < 1]
    out.append(f"{len(censored)} of {len(settings)} (B, lr) settings have at least one seed that never reached "
               f"the target; share reaching at each B's best lr: " + ", ".join(
                   f"B={b}: {r:.0%}" for b, r in zip(best.batch_size, best.reached)) + ".")
    at_noise = best[best.batch_size == s["noise_batch"]]
    if len(at_noise):
        best_lr = float(at_noise.lr.iloc[0])
        same = "is" if math.isclose(best_lr, s["noise_lr"]) else f"is not (the best is {best_lr:g})"
        out.append(f"B_simple is measured on the runs at B={s['noise_batch']}, lr {s['noise_lr']:g}, which {same} "
                   f"that B's best lr. Exact: from the per-sample gradients of {s['pool']} training rows at most, at "
                   f"epochs {', '.join(map(str, s['noise_epochs']))}; its value when a run reaches the target is "
                   "interpolated in log between checkpoints. Online: two halves of every batch, EMAs of numerator "
                   f"and denominator (decay {ONLINE_EMA_DECAY:g}), withheld (NaN) while |G|^2 is not clearly "
                   "above zero. With momentum, B_simple is still the SGD noise statistic tr(Sigma)/|G|^2 of "
                   "the parameters reached.")
    online = tables["noise_online"]
    if len(online):
        per_epoch = online.groupby(["run_id", "epoch"]).step.count().median()
        memory = 1 / (1 - ONLINE_EMA_DECAY)
        out.append(f"The online estimate's EMAs remember about 1/(1 - {ONLINE_EMA_DECAY:g}) = {memory:.0f} "
                   f"updates, i.e. {memory / per_epoch:.1f} epochs at B={s['noise_batch']}: while "
                   "|G|^2 falls it reports an older, larger |G|^2, so it lags the exact value at the same epoch.")
    if math.isfinite(fit.b_crit):
        out.append(f"Reading the fit: doubling B below B_crit ≈ {fit.b_crit:.0f} nearly halves the steps (perfect "
                   "scaling); well above it, it buys almost nothing. Perfect scaling means constant samples to "
                   "target (the flat dotted line on the right).")
    return out


STUDY = Study(
    name="critical-batch",
    question="Where does doubling the batch stop halving the steps, and does the noise scale predict it?",
    source="McCandlish et al. 2018; Shallue et al. 2019; Zhang et al. 2025",
    defaults=dict(data="digits", hidden=(64,), momentum=0.9, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024),
                  lrs=(0.01, 0.03, 0.1, 0.3, 1.0), seeds=3, target="train_loss<=0.1", step_budget=1500,
                  max_epochs=80, noise_batch=32, noise_lr=0.1, noise_epochs=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24),
                  pool=2048, resamples=200, excess=0.2),
    quick=dict(batch_sizes=(16, 64, 256), lrs=(0.03, 0.1, 0.3), seeds=2, step_budget=600, max_epochs=20,
               noise_batch=64, noise_epochs=(0, 1, 2, 4, 8), resamples=100),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("steps_to_target_vs_batch", _to_target, "per_batch"),
             FigureSpec("noise_scale_over_training", _noise, "noise_exact"),
             FigureSpec("reached_lr_batch", _heatmap, "settings")),
    findings=findings,
    checkpoints=checkpoints,
    notes=notes,
    steps=True,
    minutes=(0.7, 0.2),
)
