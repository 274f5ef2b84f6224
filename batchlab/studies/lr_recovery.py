"""Shen (2018) finding 1, with the scaling rules of Goyal et al. and Hoffer et al. (``science.md``
sections 3.1, 4 and 5): does a larger learning rate, or a switch to a small batch, recover the
test accuracy a large batch loses at a fixed learning rate?

Real MNIST (the 5,000-image set: 4,000 train / 1,000 test), MLP 784-128-128-10 (relu),
plain SGD (no momentum), batch-mean cross-entropy, the same number of epochs for every run.
Six groups, each over the same seeds:

- ``small``: B=64 at lr 0.01, the small-batch baseline;
- ``large``: B=1024 at the same lr 0.01 (16x fewer updates per epoch);
- ``x10``: B=1024 at lr 0.1 (Shen's remedy);
- ``linear``: B=1024 at lr 0.01 x 1024/64 = 0.16 with a linear warmup (Goyal et al. 2017);
- ``sqrt``: B=1024 at lr 0.01 x sqrt(1024/64) = 0.04 (Hoffer et al. 2017);
- ``switch``: B=1024 for the first half of the epochs, then B=64, lr 0.01 throughout; the
  parameters and the optimizer state carry over the switch (a run with ``phases``).

Measured: the final test accuracy of each group (mean and 95% t-interval over seeds) and its
difference from the baseline (Welch 95% interval). "Recovers" is tested as non-inferiority:
the whole interval of (group - baseline) must lie above ``-margin``.

Sizes: the MLP is 128-128 and trains 60 epochs: on 4,000 images the B=64 baseline is still
climbing at 30 epochs (about 91% test accuracy at epoch 30 and 92% at 60, measured here for
256-256 and 128-128 alike), and 128-128 costs about a third as much. The three runs at
B=1024 with a constant lr share one grid, so they train as one vmapped cohort. Quick size:
digits, MLP 64, 20 epochs, 3 seeds.
"""

from __future__ import annotations

import math

import pandas as pd

from batchlab import budget
from batchlab.analysis.curves import curves_table
from batchlab.analysis.findings import Finding, Interval, compare, difference, interval, non_inferior
from batchlab.studies.base import FigureSpec, Grid, Study, StudyData

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


def grids(s: dict) -> list[Grid]:
    """Four grids: the runs at B=1024 with a constant lr (``large``, ``x10``, ``sqrt``) share one
    grid, so they train as one vmapped cohort (one compiled program instead of three)."""
    common = dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), epochs=s["epochs"], momentum=0.0,
                  optimizer="sgd", seeds=s["seeds"])
    lrs, names = learning_rates(s), labels(s)
    large = s["large_batch"]
    return [
        Grid(names["small"], dict(common, batch_size=s["small_batch"], lr=lrs["small"])),
        Grid(constant_label(s), dict(common, batch_size=large, lr=[lrs[r] for r in ("large", "x10", "sqrt")])),
        Grid(names["linear"], dict(common, batch_size=large, lr=lrs["linear"], warmup_epochs=s["warmup_epochs"])),
        Grid(names["switch"], dict(common, batch_size=large, lr=lrs["switch"],
                                   phases=[(switch_epoch(s), s["small_batch"], None)])),
    ]


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
    return runs[["run_id", "role", "group", "batch_size", "lr", "seed", "status", "steps", "train_acc",
                 "test_acc"]].reset_index(drop=True)


def _with_interval(row: dict, name: str, iv: Interval) -> None:
    row.update({name: iv.mean, f"{name}_low": iv.low, f"{name}_high": iv.high})


def final_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per group (in ``ROLES`` order): final test and train accuracy, mean and 95% t-interval
    over seeds, and the Welch 95% interval of the test-accuracy difference from the
    small-batch baseline (``vs_small``) and from the large batch at the same lr (``vs_large``)."""
    small = runs[runs.role == "small"].test_acc
    large = runs[runs.role == "large"].test_acc
    rows = []
    for role in ROLES:
        group = runs[runs.role == role]
        if group.empty:
            continue
        row = dict(role=role, group=group.group.iloc[0], batch_size=int(group.batch_size.iloc[0]),
                   lr=float(group.lr.iloc[0]), seeds=len(group), updates=int(group.steps.max()),
                   diverged=int((group.status == "diverged").sum()))
        _with_interval(row, "test_acc", interval(group.test_acc))
        _with_interval(row, "train_acc", interval(group.train_acc))
        _with_interval(row, "vs_small", difference(group.test_acc, small))
        _with_interval(row, "vs_large", difference(group.test_acc, large))
        rows.append(row)
    return pd.DataFrame(rows)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data, s)
    order = {label: i for i, label in enumerate(labels(s).values())}
    curves = curves_table(relabel(data.history, s), ["group"], ("acc",))
    curves["panel"] = curves["group"]  # the group label alone reads better than "group=..."
    curves = curves.sort_values(["group", "split", "epoch"], key=lambda c: c.map(order) if c.name == "group" else c)
    return {"runs": runs, "final": final_table(runs), "curves": curves.reset_index(drop=True)}


def _title(s: dict) -> str:
    width = "-".join(str(h) for h in s["hidden"])
    return f"{s['data']} MLP {width}, SGD (no momentum), {s['epochs']} epochs, {s['seeds']} seeds"


def _test_curves(tables, s):
    from batchlab.plots.lr_recovery import accuracy_curves

    return accuracy_curves(tables["curves"], switch_epoch(s), title=f"Test accuracy vs epoch: {_title(s)}")


def _learning_curves(tables, s):
    from batchlab.plots.learning_curves import band_curves

    return band_curves(tables["curves"], "acc", ncols=3, title=f"Train and test accuracy per group: {_title(s)}")


def _final(tables, s):
    from batchlab.plots.lr_recovery import final_accuracy

    return final_accuracy(tables["final"], s["margin"], title=f"Final test accuracy: {_title(s)}")


def _points(iv: Interval) -> str:
    return iv.format(3, scale=100, unit=" pts")


def _acc(values) -> str:
    return interval(values).format(3, scale=100, unit="%")


def recovers(group: pd.Series, baseline: pd.Series, margin: float) -> tuple[Interval, str]:
    """Non-inferiority of ``group`` to ``baseline``: is mean(group) > mean(baseline) - margin?

    The verdict is :func:`compare` of (group + margin) against the baseline, claim 'greater':
    it agrees when the whole Welch 95% interval of (group - baseline) lies above -margin,
    disagrees when it lies entirely below -margin. Returns (group - baseline, verdict).
    """
    return non_inferior(group, baseline, margin)


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, names = tables["runs"], labels(s)
    acc = {role: runs[runs.role == role].test_acc for role in ROLES}
    small, large = names["small"], names["large"]
    diff, verdict = compare(acc["large"], acc["small"], "less")
    out = [Finding(f"at a fixed lr ({s['lr']:g}) and the same {s['epochs']} epochs, the larger batch reaches a "
                   f"lower final test accuracy (B={s['large_batch']} below B={s['small_batch']})", SOURCE,
                   f"{large}: {_acc(acc['large'])}, {small}: {_acc(acc['small'])}; difference {_points(diff)}",
                   verdict)]
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
        gain = difference(acc[role], acc["large"])
        out.append(Finding(
            f"{claim}: final test accuracy not lower than the B={s['small_batch']} baseline by more than "
            f"{margin} point(s)", source,
            f"{names[role]}: {_acc(acc[role])}; minus baseline {_points(diff)} (agrees if the whole interval "
            f"lies above -{margin} pts); gain over {large}: {_points(gain)}", verdict))
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
        f"{switch_epoch(s)}. The linear-scaling run ramps its lr linearly (lr x (update + 1) / W) up to the full lr "
        f"over its first W updates ({s['warmup_epochs']:g} epochs).",
        f"'Recovers' is a non-inferiority test with a margin of {s['margin'] * 100:g} point(s) of test accuracy: "
        "agrees when the Welch 95% interval of (group - baseline) lies entirely above -margin, disagrees when it "
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


STUDY = Study(
    name="lr-recovery",
    question="Does a larger learning rate, or switching to a small batch, recover large-batch test accuracy?",
    source=SOURCE,
    defaults=dict(data="mnist", hidden=(128, 128), epochs=60, seeds=4, small_batch=64, large_batch=1024, lr=0.01,
                  boost=10.0, warmup_epochs=2.0, switch_fraction=0.5, margin=0.01),
    quick=dict(data="digits", hidden=(64,), epochs=20, seeds=3),
    grids=grids,
    analyse=analyse,
    figures=(FigureSpec("test_accuracy_curves", _test_curves, "curves"),
             FigureSpec("learning_curves_acc", _learning_curves, "curves"),
             FigureSpec("final_test_accuracy", _final, "final")),
    findings=findings,
    notes=notes,
    minutes=(1.5, 0.25),
)
