"""The distance study's analysis: per run, the distance from the initial weights at the end, at
the epoch budget's samples and at a fixed number of updates, and the tail of its update sizes;
their means and 95% intervals per group; the curves, spreads and histograms behind the figures;
the findings against Shen (2018) (``studies/distance.py`` declares the runs; the per-step
helpers are ``analysis/steps.py``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab import budget
from batchlab.analysis.curves import curves_table
from batchlab.analysis.findings import Finding, compare, interval, interval_table, trend, within
from batchlab.analysis.steps import (at_samples, at_step, spread_over_seeds, spread_trend, tail_ratio, thin_steps,
                                     with_start)
from batchlab.analysis.study_data import StudyData

SOURCE = "Shen, Effect of batch size on training dynamics (2018)"
SWEEP, LARGE_LR, LONG = "sweep", "larger lr", "more epochs"  # the three kinds of run (roles)
QUANTITIES = ("test_acc", "train_acc", "dist_final", "dist_budget", "dist_fixed_step", "tail_ratio")
GROUP = ["group", "role", "batch_size", "lr", "epochs"]


def role(row: pd.Series | dict, s: dict) -> str:
    """Which of the study's three kinds of run a run is, from its settings."""
    if not math.isclose(row["lr"], s["lr"]):
        return LARGE_LR
    return LONG if row["epochs"] != s["epochs"] else SWEEP


def fixed_step(summary: pd.DataFrame, s: dict) -> int:
    """The update count S at which every B at the base lr is compared: ``s['fixed_step']``, or
    when that is 0, the most updates every such B reaches (the long run counts for the largest
    B: up to the epoch budget it is the same run as the sweep's)."""
    if s["fixed_step"]:
        return int(s["fixed_step"])
    base = summary[np.isclose(summary.lr, s["lr"])]
    return int(base.groupby("batch_size").steps.max().min())


def n_train(history: pd.DataFrame) -> int:
    """N, the training-set size: the samples seen after one epoch."""
    return int(history.loc[history.epoch == 1, "samples_seen"].iloc[0])


def per_run(data: StudyData, s: dict) -> pd.DataFrame:
    """One row per run: its settings, role, final accuracies and the ``QUANTITIES`` of distance
    (at its end, at the epoch budget's samples, at the fixed step S) and update-size tail."""
    steps, runs, n = data.steps, data.summary.copy(), n_train(data.history)
    s_fixed = fixed_step(runs, s)
    runs["role"] = [role(r, s) for r in runs.to_dict("records")]
    by_id = runs.set_index("run_id")
    last = steps.sort_values("step").groupby("run_id").tail(1).set_index("run_id")
    by_id["dist_final"] = last.dist_init
    by_id["dist_budget"] = at_samples(steps, "dist_init", s["epochs"] * n)
    by_id["dist_fixed_step"] = at_step(steps, "dist_init", s_fixed)
    by_id["tail_ratio"] = tail_ratio(steps, s["epochs"] * n, s["tail_quantile"])
    keep = ["group", "role", "batch_size", "lr", "epochs", "seed", "steps", "samples_seen", "status", *QUANTITIES]
    return by_id.reset_index()[["run_id", *keep]]


def by_group(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% interval over seeds of each per-run quantity, per group, with the spread
    (standard deviation) of the distance at the epoch budget."""
    return interval_table(
        runs, GROUP, QUANTITIES, sort=False,
        before=lambda part: {"seeds": len(part), "steps": int(part.steps.max())},
        after=lambda part: {"dist_budget_std": float(part.dist_budget.std(ddof=1)) if len(part) > 1 else math.nan})


def update_histogram(steps: pd.DataFrame, samples: int, bins: int = 40) -> pd.DataFrame:
    """Per B: density of update sizes divided by their run's median, pooled over seeds, up to
    ``samples`` samples seen (shared log-spaced bins, so the B are comparable)."""
    window = steps[steps.samples_seen <= samples]
    rel = window.update_norm / window.groupby("run_id").update_norm.transform("median")
    edges = np.geomspace(max(rel.min(), 1e-3), rel.max() * 1.001, bins + 1)
    rows = []
    for b, values in rel.groupby(window.batch_size):
        density, _ = np.histogram(values, edges, density=True)
        rows += [dict(batch_size=b, low=lo, high=hi, density=d, updates=len(values))
                 for lo, hi, d in zip(edges[:-1], edges[1:], density)]
    return pd.DataFrame(rows)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs, n = per_run(data, s), n_train(data.history)
    roles = runs.set_index("run_id").role
    sweep = data.steps[data.steps.run_id.map(roles) == SWEEP]
    # Step 0 (before any update) is at distance 0 by definition; the curves start there.
    thin = thin_steps(with_start(data.steps, {"dist_init": 0.0}), s["points"])
    thin["role"] = thin.run_id.map(roles)
    curves = thin.groupby([*GROUP, "step", "samples_seen"], sort=False
                          ).dist_init.agg(["mean", "std", "min", "max", "count"]).reset_index()
    curves["epoch"] = curves.samples_seen / n  # fractional epochs: samples seen / N
    history = data.history.assign(role=lambda f: f.run_id.map(roles))
    accuracy = curves_table(history, GROUP, ("acc",))
    return {
        "runs": runs,
        "groups": by_group(runs),
        "curves": curves,
        "spread": spread_over_seeds(sweep, "dist_init", ["group", "batch_size"]),
        "update_sizes": update_histogram(sweep, s["epochs"] * n),
        "accuracy": accuracy[accuracy.split == "test"].reset_index(drop=True),
    }


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs = tables["runs"]
    sweep = runs[runs.role == SWEEP]
    sizes = sorted(int(b) for b in sweep.batch_size.unique())
    of = {b: sweep[sweep.batch_size == b] for b in sizes}
    means = ", ".join(f"B={b}: {interval(of[b].dist_budget).format(3)}" for b in sizes)
    slope, verdict = trend(sizes, [of[b].dist_budget for b in sizes], "decreasing")
    out = [Finding(f"after the same {s['epochs']} epochs at lr {s['lr']:g}, larger batches travel less far "
                   "from the initial weights", SOURCE,
                   f"||theta - theta_0|| slope {slope.format(3)} per doubling of B; {means}", verdict)]
    out.append(_fixed_step_finding(runs, sizes, s))
    out += _remedy_findings(runs, of, sizes, s)
    samples = f"{s['epochs']} epochs' samples"
    slope, verdict = spread_trend(sizes, [of[b].dist_budget for b in sizes], "increasing")
    stds = ", ".join(f"B={b}: {of[b].dist_budget.std(ddof=1):.3g} (relative "
                     f"{of[b].dist_budget.std(ddof=1) / of[b].dist_budget.mean():.2%})" for b in sizes)
    out.append(Finding(f"at equal samples seen ({samples}), the distance spreads more across seeds for larger B "
                       "(spread = standard deviation over seeds)", SOURCE,
                       f"std slope {slope.format(3)} per doubling of B (bootstrap over seeds); std {stds}", verdict))
    q = f"Q{s['tail_quantile'] * 100:g}/median"
    slope, verdict = trend(sizes, [of[b].tail_ratio for b in sizes], "increasing")
    tails = ", ".join(f"B={b}: {interval(of[b].tail_ratio).format(3)}" for b in sizes)
    out.append(Finding(f"at equal samples seen ({samples}), update sizes are heavier-tailed for larger B "
                       f"(tail = {q} of ||theta_(t+1) - theta_t|| per run)", SOURCE,
                       f"slope {slope.format(3)} per doubling of B; {tails}", verdict))
    return out


def _remedy_findings(runs: pd.DataFrame, of: dict, sizes: list[int], s: dict) -> list[Finding]:
    """The largest B with a larger lr, and with more epochs, against the largest B of the sweep:
    farther from the initial weights, and higher in test accuracy?"""
    big = max(sizes)
    base, out = of[big], []
    for rl, what in ((LARGE_LR, f"lr {s['large_lr']:g}"), (LONG, f"{s['long_epochs']} epochs")):
        other = runs[runs.role == rl]
        ref = f"lr {s['lr']:g}, {s['epochs']} epochs"
        diff, verdict = compare(other.dist_final, base.dist_final, "greater")
        out.append(Finding(f"B={big} with {what} travels farther from the initial weights than with {ref}", SOURCE,
                           f"final distance {interval(other.dist_final).format(3)} vs "
                           f"{interval(base.dist_final).format(3)}; difference {diff.format(3)}", verdict))
        diff, verdict = compare(other.test_acc, base.test_acc, "greater")
        out.append(Finding(f"B={big} with {what} reaches a higher test accuracy than with {ref}", SOURCE,
                           f"final test acc {interval(other.test_acc).format(3)} vs "
                           f"{interval(base.test_acc).format(3)}; difference {diff.format(3)} "
                           f"(best sweep B={sizes[0]}: {interval(of[sizes[0]].test_acc).format(3)})", verdict))
    return out


def _fixed_step_finding(runs: pd.DataFrame, sizes: list[int], s: dict) -> Finding:
    """Distance after S updates vs B as a power law d ~ B^alpha: alpha is the trend slope of
    log2(distance) against log2(B). "Roughly independent" = |alpha| <= log2(1 + tolerance),
    i.e. less than ``tolerance`` relative change per doubling of B."""
    base = runs[np.isclose(runs.lr, s["lr"])].dropna(subset=["dist_fixed_step"])
    # The long run and the sweep run of the largest B coincide up to S: count each seed once.
    base = base.drop_duplicates(["batch_size", "seed"])
    s_fixed = fixed_step(runs, s)
    groups = [np.log2(base[base.batch_size == b].dist_fixed_step) for b in sizes]
    alpha, _ = trend(sizes, groups, "decreasing")
    bound = math.log2(1 + s["step_tolerance"])
    verdict = within(alpha, -bound, bound)
    sweep = runs[runs.role == SWEEP]
    alpha_epochs, _ = trend(sizes, [np.log2(sweep[sweep.batch_size == b].dist_budget) for b in sizes], "decreasing")
    means = ", ".join(f"B={b}: {interval(base[base.batch_size == b].dist_fixed_step).format(3)}" for b in sizes)
    return Finding(f"after the same number of updates (S={s_fixed}), the distance is roughly independent of B "
                   f"(exponent alpha of distance ~ B^alpha within +-{bound:.3f}, i.e. under "
                   f"{s['step_tolerance']:.0%} change per doubling of B)", SOURCE,
                   f"alpha {alpha.format(3)} at S={s_fixed} updates ({means}); for contrast, after "
                   f"{s['epochs']} epochs alpha {alpha_epochs.format(3)}", verdict)


def equal_updates(groups: pd.DataFrame, s: dict) -> list[str]:
    """Sentences pairing groups at the base lr that made the same number of updates."""
    base = groups[np.isclose(groups.lr, s["lr"])]
    out = []
    for steps, part in base.groupby("steps"):
        if len(part) > 1:
            ends = "; ".join(f"{r.group}: distance {r.dist_final:.3g}, test acc {r.test_acc:.3f}"
                             for r in part.itertuples())
            out.append(f"- Same number of updates ({steps:,}) at lr {s['lr']:g} -> {ends}.")
    return out


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    groups = tables["groups"]
    sweep = groups[groups.role == SWEEP].sort_values("batch_size")
    n = int(tables["spread"].samples_seen.min())  # the first epoch's end: N samples
    plans = [(int(b), budget.plan(n, int(b), s["epochs"]).total_steps) for b in sweep.batch_size]
    updates = ", ".join(f"B={b}: {k:,}" for b, k in plans)
    return [
        f"- In {s['epochs']} epochs over N={n:,} training samples the sweep makes {updates} updates. With a "
        "batch-mean loss the expected update, lr E[g_B], does not depend on B, so a fixed number of epochs "
        "(fewer updates for larger B) lets small batches travel farther; a fixed number of updates removes that.",
        f"- The learning rate is the same for every B ({s['lr']:g}, no momentum) and is not re-tuned per B "
        "(Shallue et al. 2018: comparisons across B are only fair when the lr is re-tuned for each B).",
        f"- Tail of the update sizes: Q{s['tail_quantile'] * 100:g}/median of ||theta_(t+1) - theta_t|| over every "
        f"update until {s['epochs']} epochs' samples, per run (the lr cancels). Spread: the standard deviation "
        "over seeds of ||theta - theta_0|| after the same samples; its interval is a bootstrap over seeds.",
        *equal_updates(groups, s),
    ]
