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
from batchlab.analysis.findings import (PROPORTION_DIFFERENCE, Finding, compare, decided, factor_trend, interval_table,
                                        proportion, trend, verdict_from_interval, within)
from batchlab.analysis.intervals import geometric_t, welch_log
from batchlab.analysis.trends import log_spread_slope
from batchlab.analysis.steps import at_samples, at_step, spread_over_seeds, tail_ratio, thin_steps, with_start
from batchlab.analysis.study_data import StudyData

SOURCE = "Shen, Effect of batch size on training dynamics (2018)"
SWEEP, LARGE_LR, LONG = "sweep", "larger lr", "more epochs"  # the three kinds of run (roles)
QUANTITIES = ("test_acc", "train_acc", "dist_final", "dist_budget", "dist_fixed_step", "tail_ratio")
# Accuracies are proportions; distances and tail ratios are positive and spread by factors.
METHODS = {q: proportion if q.endswith("acc") else geometric_t for q in QUANTITIES}
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
    """Estimate and 95% interval over seeds of each per-run quantity, per group (accuracies: mean,
    kept in [0, 1]; distances and tail ratios: geometric mean, t on the log scale), with the
    spread (standard deviation) of the distance at the epoch budget."""
    return interval_table(
        runs, GROUP, METHODS, sort=False,
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
    means = ", ".join(f"B={b}: {geometric_t(of[b].dist_budget).format(3)}" for b in sizes)
    factor, verdict = factor_trend(sizes, [of[b].dist_budget for b in sizes], "decreasing")
    out = [decided(f"after the same {s['epochs']} epochs at lr {s['lr']:g}, larger batches travel less far "
                   "from the initial weights", SOURCE,
                   f"‖θ − θ₀‖ changes by a factor {factor.format(3)} per doubling of B (95% "
                   f"{factor.method}); geometric means {means}", verdict, factor)]
    out.append(_fixed_step_finding(runs, sizes, s))
    out += _remedy_findings(runs, of, sizes, s)
    out.append(_spread_finding(of, sizes, s))
    q = f"Q{s['tail_quantile'] * 100:g}/median"
    factor, verdict = factor_trend(sizes, [of[b].tail_ratio for b in sizes], "increasing")
    tails = ", ".join(f"B={b}: {geometric_t(of[b].tail_ratio).format(3)}" for b in sizes)
    out.append(decided(f"at equal samples seen ({s['epochs']} epochs' samples), update sizes are heavier-tailed "
                       f"for larger B (tail = {q} of ‖θₜ₊₁ − θₜ‖ per run)", SOURCE,
                       f"the tail changes by a factor {factor.format(3)} per doubling of B (95% {factor.method}); "
                       f"{tails}", verdict, factor))
    return out


def _spread_finding(of: dict, sizes: list[int], s: dict) -> Finding:
    """Does the distance spread more across seeds for larger B? Checked on both scales — the
    standard deviation and the coefficient of variation (std / mean): the mean distance itself
    shrinks with B, so the two can disagree, and then the answer depends on the scale chosen
    and the verdict is inconclusive rather than a pick of one."""
    values = [of[b].dist_budget for b in sizes]
    absolute = log_spread_slope(sizes, values)
    relative = log_spread_slope(sizes, values, relative=True)
    verdicts = [verdict_from_interval(iv.low, iv.high, +1) for iv in (absolute, relative)]
    verdict = verdicts[0] if verdicts[0] == verdicts[1] else "inconclusive"
    stds = ", ".join(f"B={b}: {of[b].dist_budget.std(ddof=1):.3g} (relative "
                     f"{of[b].dist_budget.std(ddof=1) / of[b].dist_budget.mean():.2%})" for b in sizes)
    finding = decided(f"at equal samples seen ({s['epochs']} epochs' samples), the distance spreads more across "
                      "seeds for larger B, as a standard deviation and relative to the mean", SOURCE,
                      f"log2 of the std changes by {absolute.format(3)} per doubling of B, log2 of std/mean by "
                      f"{relative.format(3)} (95% {absolute.method}); std {stds}", verdict, absolute, relative)
    if not finding.reason and set(verdicts) == {"agrees", "disagrees"}:
        return Finding(finding.claim, finding.source, finding.measured, verdict,
                       "the absolute spread and the relative spread move in opposite directions, so the answer "
                       "depends on the scale")
    return finding


def _remedy_findings(runs: pd.DataFrame, of: dict, sizes: list[int], s: dict) -> list[Finding]:
    """The largest B with a larger lr, and with more epochs, against the largest B of the sweep:
    farther from the initial weights (ratio of geometric means above 1), and higher in test
    accuracy?"""
    big = max(sizes)
    base, out = of[big], []
    for rl, what in ((LARGE_LR, f"lr {s['large_lr']:g}"), (LONG, f"{s['long_epochs']} epochs")):
        other = runs[runs.role == rl]
        ref = f"lr {s['lr']:g}, {s['epochs']} epochs"
        ratio = welch_log(other.dist_final, base.dist_final)
        verdict = verdict_from_interval(np.log(ratio.low), np.log(ratio.high), +1) if ratio.given else "inconclusive"
        out.append(decided(f"B={big} with {what} travels farther from the initial weights than with {ref}", SOURCE,
                           f"final distance {geometric_t(other.dist_final).format(3)} vs "
                           f"{geometric_t(base.dist_final).format(3)} (geometric means); ratio {ratio.format(3)} "
                           f"(95% {ratio.method})", verdict, ratio))
        diff, verdict = compare(other.test_acc, base.test_acc, "greater", PROPORTION_DIFFERENCE)
        out.append(decided(f"B={big} with {what} reaches a higher test accuracy than with {ref}", SOURCE,
                           f"final test acc {proportion(other.test_acc).format(3)} vs "
                           f"{proportion(base.test_acc).format(3)}; difference {diff.format(3)} (95% {diff.method}) "
                           f"(best sweep B={sizes[0]}: {proportion(of[sizes[0]].test_acc).format(3)})", verdict, diff))
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
    means = ", ".join(f"B={b}: {geometric_t(base[base.batch_size == b].dist_fixed_step).format(3)}" for b in sizes)
    return decided(f"after the same number of updates (S={s_fixed}), the distance is roughly independent of B "
                   f"(exponent alpha of distance ∝ B^alpha within ±{bound:.3f}, i.e. under "
                   f"{s['step_tolerance']:.0%} change per doubling of B; equivalence test)", SOURCE,
                   f"alpha {alpha.format(3)} at S={s_fixed} updates (95% {alpha.method} on log2 distances; "
                   f"geometric means {means}); for contrast, after {s['epochs']} epochs alpha "
                   f"{alpha_epochs.format(3)}", verdict, alpha)


def equal_updates(groups: pd.DataFrame, s: dict) -> list[str]:
    """Sentences pairing groups at the base lr that made the same number of updates."""
    base = groups[np.isclose(groups.lr, s["lr"])]
    out = []
    for steps, part in base.groupby("steps"):
        if len(part) > 1:
            ends = "; ".join(f"{r.group}: distance {r.dist_final:.3g}, test acc {r.test_acc:.3f}"
                             for r in part.itertuples())
            out.append(f"- Same number of updates ({steps:,}) at lr {s['lr']:g} → {ends}.")
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
        f"- Tail of the update sizes: Q{s['tail_quantile'] * 100:g}/median of ‖θₜ₊₁ − θₜ‖ over every "
        f"update until {s['epochs']} epochs' samples, per run (the lr cancels). Spread: the standard deviation "
        "over seeds of ‖θ − θ₀‖ after the same samples, and the same relative to the mean; their "
        "trends are slopes of log s² with the chi-square variance of normal replicates (Bartlett & Kendall "
        "1946), which needs 3 or more seeds per B.",
        *equal_updates(groups, s),
    ]
