"""The lr-recovery study's analysis: each group's role (baseline, large batch, the remedies),
its final test and train accuracy with 95% intervals, the differences from the baseline and
from the large batch, and the non-inferiority findings against Shen (2018), Goyal et al. and
Hoffer et al. (``studies/lr_recovery.py`` declares the runs).

The groups' learning rates, labels and switch epoch are computed here from the settings, and
the study's grids use them, so the runs and their analysis cannot disagree.
"""

from __future__ import annotations

import math

import pandas as pd

from batchlab import budget
from batchlab.analysis.curves import curves_table
from batchlab.analysis.findings import (PROPORTION_DIFFERENCE, Finding, Interval, compare, decided, difference,
                                        interval_columns, interval_table, non_inferior, proportion, unmet)
from batchlab.analysis.study_data import StudyData

SOURCE = "Shen, Effect of batch size on training dynamics (2018)"
GOYAL = "Goyal et al. 2017 (linear scaling with warmup)"
HOFFER = "Hoffer et al. 2017 (square-root scaling)"
ROLES = ("small", "large", "x10", "linear", "sqrt", "switch")


def learning_rates(s: dict) -> dict[str, float]:
    """The learning rate of each group: lr_B' = lr_B x (B'/B) (linear) or x sqrt(B'/B) (sqrt),
    from the small-batch lr (Goyal et al. 2017; Hoffer et al. 2017)."""
    base, small, large = s["lr"], s["small_batch"], s["large_batch"]
    return {"small": base, "large": base, "x10": base * s["boost"], "switch": base,
            "linear": budget.scaled_lr("linear", base, small, large), "sqrt": budget.scaled_lr("sqrt", base, small, large)}


def switch_epoch(s: dict) -> int:
    """Epochs trained at the large batch before the switch (at least 1, at most epochs - 1)."""
    return min(max(1, round(s["epochs"] * s["switch_fraction"])), s["epochs"] - 1)


def labels(s: dict) -> dict[str, str]:
    """Each group's label in tables, legends and findings (numbers from the settings)."""
    small, large, lrs = s["small_batch"], s["large_batch"], learning_rates(s)
    return {
        "small": f"B={small}, lr {lrs['small']:g}",
        "large": f"B={large}, lr {lrs['large']:g}",
        "x10": f"B={large}, lr {lrs['x10']:g} (x{s['boost']:g})",
        "linear": f"B={large}, lr {lrs['linear']:g} (linear, warmup {s['warmup_epochs']:g} ep)",
        "sqrt": f"B={large}, lr {lrs['sqrt']:g} (sqrt)",
        "switch": f"B={large}\u2192{small} after {switch_epoch(s)} ep, lr {lrs['switch']:g}",
    }


def constant_label(s: dict) -> str:
    """The grid that trains the large batch at the three constant learning rates (one cohort)."""
    return f"B={s['large_batch']}, constant lr"


def roles(frame: pd.DataFrame, s: dict) -> pd.Series:
    """Each row's role, from its grid (``group``) and, in the constant-lr grid, its lr.

    If two roles share an lr (e.g. ``boost`` set to sqrt(B'/B)), the runs are one setting and
    count for the first role in ``ROLES`` order.
    """
    lrs, names = learning_rates(s), labels(s)
    by_label = {names[r]: r for r in ("small", "linear", "switch")}

    def role(group: str, lr: float) -> str | None:
        if group != constant_label(s):
            return by_label.get(group)
        return next((r for r in ("large", "x10", "sqrt") if math.isclose(lr, lrs[r], rel_tol=1e-9)), None)

    return pd.Series([role(g, lr) for g, lr in zip(frame.group, frame.lr)], index=frame.index, dtype=object)


def relabel(frame: pd.DataFrame, s: dict) -> pd.DataFrame:
    """``frame`` with a ``role`` column and ``group`` set to the role's label (one group per role)."""
    frame = frame.assign(role=roles(frame, s))
    frame = frame[frame.role.notna()]
    return frame.assign(group=frame.role.map(labels(s)))


def per_run(data: StudyData, s: dict) -> pd.DataFrame:
    """One row per run: role, group, starting B, lr, seed, updates, final train/test accuracy."""
    runs = relabel(data.summary, s)
    return runs[["run_id", "role", "group", "batch_size", "lr", "seed", "status", "steps", "samples_seen",
                 "train_acc", "test_acc"]].reset_index(drop=True)


def final_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group (in ``ROLES`` order): final test and train accuracy, mean and 95% t-interval
    over seeds, and the Welch 95% interval of the test-accuracy difference from the
    small-batch baseline (``vs_small``) and from the large batch at the same lr (``vs_large``)."""
    small = runs[runs.role == "small"].test_acc
    large = runs[runs.role == "large"].test_acc

    def describe(group: pd.DataFrame) -> dict:
        return dict(group=group.group.iloc[0], batch_size=int(group.batch_size.iloc[0]), lr=float(group.lr.iloc[0]),
                    seeds=len(group), updates=int(group.steps.max()), diverged=int((group.status == "diverged").sum()))

    def differences(group: pd.DataFrame) -> dict:
        return {**interval_columns("vs_small", difference(group.test_acc, small, PROPORTION_DIFFERENCE)),
                **interval_columns("vs_large", difference(group.test_acc, large, PROPORTION_DIFFERENCE))}

    in_order = runs.sort_values("role", key=lambda role: role.map(ROLES.index), kind="stable")
    return interval_table(in_order, "role", {"test_acc": proportion, "train_acc": proportion}, before=describe,
                          after=differences, sort=False)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data, s)
    order = {label: i for i, label in enumerate(labels(s).values())}
    curves = curves_table(relabel(data.history, s), ["group"], ("acc",))
    curves["panel"] = curves["group"]  # the group label alone reads better than "group=..."
    curves = curves.sort_values(["group", "split", "epoch"], key=lambda c: c.map(order) if c.name == "group" else c)
    return {"runs": runs, "final": final_table(runs), "curves": curves.reset_index(drop=True)}


def _points(iv: Interval) -> str:
    return iv.format(3, scale=100, unit=" pts")


def _acc(values) -> str:
    return proportion(values).format(3, scale=100, unit="%")


def equal_samples(runs: pd.DataFrame, roles: tuple[str, ...]) -> str:
    """'' when every run of ``roles`` saw the same number of samples, else why a recovery cannot
    be called: a group that trained on more samples (or fewer) is not compared like for like."""
    seen = runs[runs.role.isin(roles)].groupby("role").samples_seen.agg(["min", "max"])
    if len(seen) and seen["min"].min() == seen["max"].max():
        return ""
    return "the groups did not see the same number of samples (" + ", ".join(
        f"{role}: {int(row['min']):,}" + (f"-{int(row['max']):,}" if row["max"] != row["min"] else "")
        for role, row in seen.iterrows()) + ")"


def recovers(group: pd.Series, baseline: pd.Series, margin: float) -> tuple[Interval, str]:
    """Non-inferiority of ``group`` to ``baseline``: is mean(group) > mean(baseline) - margin?

    The verdict is :func:`compare` of (group + margin) against the baseline, claim 'greater':
    it agrees when the whole Welch 95% interval of (group - baseline) lies above -margin,
    disagrees when it lies entirely below -margin. Returns (group - baseline, verdict).
    """
    return non_inferior(group, baseline, margin, PROPORTION_DIFFERENCE)


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, names = tables["runs"], labels(s)
    acc = {role: runs[runs.role == role].test_acc for role in ROLES}
    small, large = names["small"], names["large"]
    updates = runs.groupby("role").steps.max()
    diff, verdict = compare(acc["large"], acc["small"], "less", PROPORTION_DIFFERENCE)
    out = [unmet(decided(f"at a fixed lr ({s['lr']:g}) and the same {s['epochs']} epochs, the larger batch reaches a "
                         f"lower final test accuracy (B={s['large_batch']} below B={s['small_batch']})", SOURCE,
                         f"{large}: {_acc(acc['large'])}, {small}: {_acc(acc['small'])}; difference {_points(diff)} "
                         f"(95% {diff.method})", verdict, diff), equal_samples(runs, ("small", "large")))]
    margin = f"{s['margin'] * 100:g}"
    claims = {
        "x10": (f"a {s['boost']:g}x larger lr recovers the large batch's accuracy", SOURCE),
        "linear": ("linear lr scaling with warmup recovers the large batch's accuracy", GOYAL),
        "sqrt": ("square-root lr scaling recovers the large batch's accuracy", HOFFER),
        "switch": (f"switching from B={s['large_batch']} to B={s['small_batch']} after {switch_epoch(s)} epochs "
                   "still reaches the small-batch accuracy (the large batch does not trap the model)", SOURCE),
    }
    for role, (claim, source) in claims.items():
        diff, verdict = recovers(acc[role], acc["small"], s["margin"])
        gain = difference(acc[role], acc["large"], PROPORTION_DIFFERENCE)
        finding = decided(
            f"{claim}: final test accuracy not lower than the B={s['small_batch']} baseline by more than "
            f"{margin} point(s), after as many samples", source,
            f"{names[role]}: {_acc(acc[role])}; minus baseline {_points(diff)} (95% {diff.method}; agrees if the "
            f"whole interval lies above -{margin} pts); gain over {large}: {_points(gain)}; equal samples "
            f"({s['epochs']} epochs), updates {updates.get(role, 0):,} vs the baseline's {updates.get('small', 0):,}",
            verdict, diff)
        out.append(unmet(finding, equal_samples(runs, ("small", role))))
    return out


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    """Paragraphs of findings.md: updates per group, the fixed-lr caveat, the non-inferiority
    rule, and the final-accuracy table (one markdown table, 95% intervals)."""
    final = tables["final"].set_index("role")
    updates = "; ".join(f"{final.group[r]}: {final.updates[r]:,}" for r in ROLES if r in final.index)
    lines = [
        f"Every run trains {s['epochs']} epochs, so the groups differ in updates: {updates}. The learning rate is "
        "fixed per group, not re-tuned for each batch size; Shallue et al. (2018) show that comparisons across "
        "batch sizes are only fair with a re-tuned lr, and that neither scaling rule holds consistently.",
        f"The switch run keeps its parameters and SGD state across the change of batch size after epoch "
        f"{switch_epoch(s)}. The linear-scaling run ramps its lr linearly (lr × (update + 1) / W) up to the full lr "
        f"over its first W updates ({s['warmup_epochs']:g} epochs).",
        f"'Recovers' is a non-inferiority test with a margin of {s['margin'] * 100:g} point(s) of test accuracy: "
        "agrees when the Welch 95% interval of (group − baseline) lies entirely above −margin, disagrees when it "
        "lies entirely below, inconclusive otherwise.",
        final_markdown(final.reset_index()),
    ]
    diverged = int(final.diverged.sum())
    if diverged:
        lines.append(f"{diverged} run(s) diverged; their last finite state is what is reported.")
    return lines


def final_markdown(final: pd.DataFrame) -> str:
    """The ``final`` table as one markdown table: accuracies with 95% t-intervals over seeds,
    the difference from the baseline (first row) with its Welch 95% interval."""
    rows = ["| group | updates | final test acc (95% CI) | final train acc (95% CI) | minus baseline (95% CI) |",
            "|---|---|---|---|---|"]
    for i, row in final.iterrows():
        n = int(row.seeds)
        test = Interval(row.test_acc, row.test_acc_low, row.test_acc_high, n)
        train = Interval(row.train_acc, row.train_acc_low, row.train_acc_high, n)
        gap = Interval(row.vs_small, row.vs_small_low, row.vs_small_high, n)
        rows.append(f"| {row.group} | {row.updates:,} | {test.format(3, 100, '%')} | {train.format(3, 100, '%')} "
                    f"| {'(baseline)' if i == 0 else _points(gap)} |")
    return "\n".join(rows)
