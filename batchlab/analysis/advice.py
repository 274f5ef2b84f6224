"""The advisor's choice: from an lr x B sweep, the batch size, lr and epochs to recommend, with
the evidence (``batchlab advise``; the planner that trains is ``batchlab/advise/``).

DataFrames in, DataFrames and dicts out; no engine, no JAX. What "usable" and "best lr" mean
is :mod:`batchlab.analysis.selection`'s rule, the one ``analyze`` and the studies use, so a run
that diverged, blew up or ended short of the target is never recommended.

The rule that decides (:data:`RULE`): among the batch sizes that have a best lr, the one with
the least (updates to the target) x (samples to the target). With S(B) = S_min (1 + B_crit/B)
and E = B S, S x E is proportional to (1 + B_crit/B)(1 + B/B_crit), smallest at B = B_crit: the
balance point of time on hardware that parallelises the batch and compute (McCandlish et al.
2018: both are twice their minimum there). It does not depend on this device, whose time per
update is measured and reported; ``prefer="time"`` takes the least wall time on this device
instead, ``prefer="compute"`` the fewest samples.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from batchlab.analysis.critical_batch import runs_to_target
from batchlab.analysis.intervals import geometric_t
from batchlab.analysis.scaling import CriticalBatchFit, fit_critical_batch, per_setting, seed_fits
from batchlab.analysis.selection import RULE as BEST_RULE, best_per_batch, grid_edge
from batchlab.targets import Target

PREFERENCES = ("balanced", "time", "compute")
RULE = {"balanced": "the least (updates to the target) x (samples to the target): the balance of time and "
                    "compute where the device parallelises the batch, near B_crit",
        "time": "the least wall time to the target on this device",
        "compute": "the fewest samples (forward and backward passes) to the target"}
BRANCH_TOLERANCE = 0.05  # a branch at k x B "keeps up" while its loss is within 5% of every smaller one's
BRANCH_SMOOTHING = 0.5  # EMA weight of the newest loss (Merrill et al. 2025 used 0.5)


def recommendation_rule(prefer: str) -> str:
    """The rule that decides, in words (printed with every advice)."""
    return (f"recommended B = among the batch sizes with a best lr, {RULE[prefer]}; {BEST_RULE}; "
            "never a run that diverged, blew up or ended short of the target")


def per_batch(history: pd.DataFrame, summary: pd.DataFrame, target: Target, seconds_per_step: dict[int, float],
              n_train: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per (B, lr) settings, per B at its best lr) with the steps, epochs, samples and wall time
    to the target: geometric means over seeds with 95% t intervals on the log scale (3 seeds: a
    percentile bootstrap of so few under-covers, ``science.md`` 7b). Wall time = steps x the
    B's measured seconds per update (one run alone on this device, compilation excluded)."""
    runs = runs_of(history, summary, target)
    settings = per_setting(summary, history, target)
    best = best_per_batch(settings)
    rows = []
    for _, row in best.iterrows():
        b = int(row.batch_size)
        out = {"batch_size": b, "lr": row.lr, "seeds": int(row.seeds), "reached": row.reached}
        picked = runs[(runs.batch_size == b) & np.isclose(runs.lr, row.lr)] if not math.isnan(row.lr) else runs[:0]
        steps = geometric_t(picked.steps)
        epochs = geometric_t(picked.steps * b / n_train)
        per_step = seconds_per_step.get(b, math.nan)
        for key, iv, scale in (("steps", steps, 1.0), ("epochs", epochs, 1.0), ("samples", steps, b),
                               ("seconds", steps, per_step)):
            out.update({key: iv.mean * scale, f"{key}_low": iv.low * scale, f"{key}_high": iv.high * scale})
        out["interval"] = steps.method if steps.given else steps.why
        out["seconds_per_step"] = per_step
        # This B's own grid: the advisor's lrs differ from one B to the next.
        out["lr_edge"] = grid_edge(pd.DataFrame({"lr": [row.lr]}), settings[settings.batch_size == b].lr).iloc[0]
        rows.append(out)
    table = pd.DataFrame(rows)
    if len(table):
        table["pareto"] = pareto(table.seconds.to_numpy(float), table.samples.to_numpy(float))
    return settings, table


def runs_of(history: pd.DataFrame, summary: pd.DataFrame, target: Target) -> pd.DataFrame:
    """One row per run with its steps to the target and whether it is usable
    (``critical_batch.runs_to_target``; a regression has no accuracy and the advisor's runs no
    study group: those columns are NaN)."""
    missing = {c: math.nan for c in ("group", "test_acc") if c not in summary}
    return runs_to_target(history, summary.assign(**missing), target)


def step_time_fit(batch_sizes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """(a, b) of t(B) = a + b B, the seconds per update against B, by non-negative least squares
    on the probes (a: the fixed cost of an update, dispatch and bookkeeping; b: each sample's
    share). Short probes time single updates of ~0.1 ms to within a factor 2; the fit pools them."""
    from scipy.optimize import nnls

    b = np.asarray(batch_sizes, float)
    t = np.asarray(seconds, float)
    ok = np.isfinite(t) & (t > 0)
    if ok.sum() == 0:
        return math.nan, math.nan
    # Relative errors: each probe weighs by 1/t, so the small batches' short steps count as much.
    w = 1.0 / t[ok]
    (a, slope), _ = nnls(np.stack([w, b[ok] * w], axis=1), np.ones(ok.sum()))
    return float(a), float(slope)


def pareto(seconds: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Whether each point is on the Pareto front of (wall time, samples): no other point is at
    least as good in both and better in one. NaN points are never on it."""
    ok = np.isfinite(seconds) & np.isfinite(samples)
    front = np.zeros(len(seconds), bool)
    for i in np.flatnonzero(ok):
        others = ok & (seconds <= seconds[i]) & (samples <= samples[i]) & ((seconds < seconds[i]) | (samples < samples[i]))
        front[i] = not others.any()
    return front


def choose(table: pd.DataFrame, prefer: str = "balanced") -> pd.Series | None:
    """The recommended row of :func:`per_batch`'s table under :data:`RULE` (None: no B has a best lr)."""
    ok = table[table.lr.notna() & np.isfinite(table.steps) & np.isfinite(table.samples)]
    if prefer == "time":
        ok = ok[np.isfinite(ok.seconds)]
    if ok.empty:
        return None
    score = {"balanced": ok.steps * ok.samples, "time": ok.seconds, "compute": ok.samples}[prefer]
    return ok.loc[score.idxmin()]


def critical_batch(runs: pd.DataFrame, settings: pd.DataFrame, table: pd.DataFrame) -> dict:
    """B_crit = E_min / S_min fitted to the best steps per B (``analysis/scaling.py``), with a
    95% interval over each seed's own fit (t on the log scale); NaN with ``why`` when fewer than
    3 batch sizes have a best lr or the fit fails."""
    fitted = table[table.lr.notna()]
    out = {"value": math.nan, "low": math.nan, "high": math.nan, "method": "", "why": "", "s_min": math.nan}
    if len(fitted) < 3:
        out["why"] = f"only {len(fitted)} batch size(s) reached the target with a usable lr (3 needed)"
        return out
    try:
        fit = fit_critical_batch(fitted.batch_size, fitted.steps)
    except Exception as exc:  # noqa: BLE001 - a failed fit is reported, not raised
        out["why"] = f"the fit failed: {exc}"
        return out
    seeds = seed_fits(runs, settings[settings.usable == 1.0][["batch_size", "lr"]])
    iv = geometric_t(seeds.b_crit)
    out.update(value=fit.b_crit, s_min=fit.s_min, low=iv.low, high=iv.high,
               method=f"each seed's own fit, {iv.method}" if iv.given else "", why=iv.why)
    return out


def regime(b_crit: float, batch_size: int) -> str:
    """What doubling B buys at ``batch_size`` under the fitted S(B) ('' without a fit)."""
    if not math.isfinite(b_crit):
        return ""
    return CriticalBatchFit(1.0, b_crit, math.nan, math.nan).regime(batch_size)


def smoothed(losses: Sequence[float], alpha: float = BRANCH_SMOOTHING) -> float:
    """The last value of an exponential moving average (weight ``alpha`` on the newest value)."""
    value = math.nan
    for loss in losses:
        value = loss if math.isnan(value) else alpha * loss + (1 - alpha) * value
    return value


def local_critical_batch(batch_sizes: Sequence[int], losses: Sequence[float],
                         tolerance: float = BRANCH_TOLERANCE) -> tuple[float, bool]:
    """(the local critical batch size, whether it is censored at the largest branch) from branches
    at k x B that trained the same number of samples from one checkpoint (Merrill et al. 2025):
    the largest k x B whose smoothed loss is within ``tolerance`` (relative) of every smaller
    branch's, i.e. loss_k <= (1 + tolerance) min_{j<k} loss_j, scanning k upwards and stopping
    at the first branch that falls behind. A diverged branch (non-finite loss) falls behind."""
    order = np.argsort(np.asarray(batch_sizes, float))
    sizes = np.asarray(batch_sizes, float)[order]
    values = np.asarray(losses, float)[order]
    if len(sizes) == 0 or not math.isfinite(values[0]):
        return math.nan, False
    best = values[0]
    for i in range(1, len(sizes)):
        if not (math.isfinite(values[i]) and values[i] <= (1 + tolerance) * best):
            return float(sizes[i - 1]), False
        best = min(best, values[i])
    return float(sizes[-1]), True


def lr_rules(base_batch: int, base_lr: float, noise: float) -> dict[str, Callable[[int], float]]:
    """The lr at B each rule predicts from the best lr at ``base_batch``: ``linear`` (Goyal et al.
    2017), ``square_root`` (Hoffer et al. 2017; Malladi et al. 2022 for Adam) and ``noise_scale``,
    McCandlish et al.'s (2018) optimal step lr(B) = lr_max / (1 + B_noise / B), linear far below
    the noise scale and saturating above it, with B_noise = ``noise`` (NaN: left out)."""
    rules: dict[str, Callable[[int], float]] = {
        "linear": lambda b: base_lr * b / base_batch,
        "square_root": lambda b: base_lr * math.sqrt(b / base_batch)}
    if math.isfinite(noise) and noise > 0:
        rules["noise_scale"] = lambda b: base_lr * (1 + noise / base_batch) / (1 + noise / b)
    return rules


def rule_check(table: pd.DataFrame, settings: pd.DataFrame, rules: dict[str, Callable[[int], float]]
               ) -> pd.DataFrame:
    """Per B: the best lr found, the bracket it lies in (its neighbours in that B's lr grid: the
    best of a unimodal curve lies between them), what each rule of :func:`lr_rules` predicted,
    and whether the prediction falls inside the bracket."""
    rows = []
    for _, row in table[table.lr.notna()].iterrows():
        b, lr = int(row.batch_size), float(row.lr)
        grid = np.sort(settings[settings.batch_size == b].lr.unique())
        i = int(np.argmin(np.abs(np.log(grid) - math.log(lr))))
        low = grid[i - 1] if i > 0 else 0.0
        high = grid[i + 1] if i + 1 < len(grid) else math.inf
        out = {"batch_size": b, "best_lr": lr, "bracket_low": low, "bracket_high": high}
        for name, predict in rules.items():
            out[f"{name}_lr"] = predicted = predict(b)
            out[f"{name}_holds"] = bool(low < predicted < high)
        rows.append(out)
    return pd.DataFrame(rows)


def closest_runs(history: pd.DataFrame, target: Target, count: int = 3) -> pd.DataFrame:
    """The ``count`` runs whose best value of the target's metric came closest to it (for an
    honest "not reached"): run id, B, lr, seed and that best value with its epoch."""
    rows = []
    for run_id, run in history.groupby("run_id"):
        values = run[target.metric].to_numpy(float)
        if not np.isfinite(values).any():
            continue
        i = int(np.nanargmax(values) if target.op == ">=" else np.nanargmin(values))
        rows.append({"run_id": run_id, "batch_size": int(run.batch_size.iloc[0]), "lr": float(run.lr.iloc[0]),
                     "seed": int(run.seed.iloc[0]), "best": float(values[i]), "epoch": int(run.epoch.iloc[i])})
    frame = pd.DataFrame(rows, columns=["run_id", "batch_size", "lr", "seed", "best", "epoch"])
    return frame.sort_values("best", ascending=not target.op == ">=").head(count).reset_index(drop=True)
