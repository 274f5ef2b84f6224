"""The optimizer study's analysis: per run, the weight norm at the start and the end (from the
checkpoint instrument), the distance travelled and the accuracies; their means and 95% intervals
per group; weight-norm and accuracy curves; the findings against Shen (2018)
(``studies/optimizer.py`` declares the runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab.analysis.curves import curves_table
from batchlab.analysis.steps import thin_steps, with_start
from batchlab.analysis.findings import (PROPORTION_DIFFERENCE, Finding, compare, decided, interval_table, proportion,
                                        within)
from batchlab.analysis.intervals import geometric_t
from batchlab.analysis.study_data import StudyData

SOURCE = "Shen, Effect of batch size on training dynamics (2018)"
NORM = "param_norm"  # the checkpoint instrument: ||theta||_2 of the saved parameters
NAMES = {"sgd": "SGD", "adam": "Adam"}
QUANTITIES = ("test_acc", "train_acc", "initial_norm", "final_norm", "norm_ratio", "dist_final")
GROUP = ["group", "optimizer", "batch_size", "lr"]
# Accuracies are proportions; norms, their ratio and distances are positive and spread by factors.
METHODS = {q: proportion if q.endswith("acc") else geometric_t for q in QUANTITIES}


def per_run(data: StudyData, s: dict) -> pd.DataFrame:
    """One row per run: optimizer, B, lr, seed, final accuracies, ||theta_0||, ||theta_T||, their
    ratio and the final distance from the initial weights."""
    runs = data.summary.set_index("run_id")
    norms = data.measurements[data.measurements.instrument == NORM].drop_duplicates(["run_id", "epoch"])
    at = norms.pivot(index="run_id", columns="epoch", values="weight_norm")
    runs["initial_norm"] = at[0]
    runs["final_norm"] = at[s["epochs"]]
    runs["norm_ratio"] = runs.final_norm / runs.initial_norm
    last = data.steps.sort_values("step").groupby("run_id").tail(1).set_index("run_id")
    runs["dist_final"] = last.dist_init
    runs["final_norm_steps"] = last.weight_norm  # the per-step instrument's last value, a cross-check
    keep = ["group", "optimizer", "batch_size", "lr", "seed", *QUANTITIES, "final_norm_steps"]
    return runs.reset_index()[["run_id", *keep]]


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    runs = per_run(data, s)
    n = int(data.history.loc[data.history.epoch == 1, "samples_seen"].iloc[0])
    # Step 0 is the initial weights: their norm from the checkpoint instrument, distance 0.
    steps = with_start(data.steps, {"weight_norm": runs.set_index("run_id").initial_norm, "dist_init": 0.0})
    thin = thin_steps(steps, s["points"])
    weights = thin.groupby([*GROUP, "step", "samples_seen"], sort=False
                           ).weight_norm.agg(["mean", "std", "min", "max", "count"]).reset_index()
    weights["epoch"] = weights.samples_seen / n  # fractional epochs: samples seen / N
    accuracy = curves_table(data.history, GROUP, ("acc",))
    for table in (weights, accuracy):
        table["line"] = [f"{NAMES[o]}, lr {lr:g}" for o, lr in zip(table.optimizer, table.lr)]
    groups = interval_table(runs, GROUP, METHODS, before=lambda group: {"seeds": len(group)}, sort=False)
    return {"runs": runs, "groups": groups, "weights": weights,
            "accuracy": accuracy[accuracy.split == "test"].reset_index(drop=True)}


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs, out = tables["runs"], []
    for b in sorted(runs.batch_size.unique()):
        adam = runs[(runs.batch_size == b) & (runs.optimizer == "adam")]
        for lr in s["sgd_lrs"]:
            sgd = runs[(runs.batch_size == b) & (runs.optimizer == "sgd") & np.isclose(runs.lr, lr)]
            setting = f"B={b}, SGD lr {lr:g} vs Adam lr {s['adam_lr']:g}, {s['epochs']} epochs"
            diff, verdict = compare(adam.final_norm, sgd.final_norm, "greater")
            out.append(decided(f"Adam ends with a larger weight norm than SGD ({setting})", SOURCE,
                               f"‖θ_T‖ Adam {geometric_t(adam.final_norm).format(3)}, SGD "
                               f"{geometric_t(sgd.final_norm).format(3)} (geometric means); difference "
                               f"{diff.format(3)} (95% {diff.method})", verdict, diff))
            ratio = geometric_t(sgd.norm_ratio)
            out.append(decided(f"SGD's weight norm stays near the initial one: ‖θ_T‖ / ‖θ₀‖ within "
                               f"1 ± {s['tolerance']:g} (B={b}, SGD lr {lr:g}, {s['epochs']} epochs; equivalence "
                               "test)", SOURCE,
                               f"ratio SGD {ratio.format(3)} (Adam {geometric_t(adam.norm_ratio).format(3)}; "
                               f"geometric means, 95% t on the log scale)",
                               within(ratio, 1 - s["tolerance"], 1 + s["tolerance"]), ratio))
            diff, verdict = compare(adam.test_acc, sgd.test_acc, "less", PROPORTION_DIFFERENCE)
            out.append(decided(f"Adam reaches a lower test accuracy than SGD ({setting})", SOURCE,
                               f"final test acc Adam {proportion(adam.test_acc).format(3)}, SGD "
                               f"{proportion(sgd.test_acc).format(3)}; difference {diff.format(3)} "
                               f"(95% {diff.method})", verdict, diff))
    return out


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    groups = tables["groups"]
    far = ", ".join(f"{NAMES[r.optimizer]} lr {r.lr:g} B={r.batch_size}: {r.dist_final:.3g}"
                    for r in groups.itertuples())
    return [
        "- Adam divides each coordinate's step by a running estimate of its gradient's scale, so every weight "
        "moves by up to about the lr per update however small its gradient; SGD's steps shrink with the gradient.",
        f"- Distance travelled ‖θ_T − θ₀‖ (mean over seeds): {far}; the initial norm is "
        f"{groups.initial_norm.mean():.3g} (He-uniform hidden layers, Glorot-uniform output).",
        f"- Learning rates are fixed, the same for every B and not tuned: SGD at "
        f"{' and '.join(f'{lr:g}' for lr in s['sgd_lrs'])} (no momentum), Adam at its usual default "
        f"{s['adam_lr']:g}; another lr for either optimizer can change the accuracy ranking.",
        f"- 'Near the initial norm' means the interval of ‖θ_T‖ / ‖θ₀‖ over seeds lies within "
        f"1 ± {s['tolerance']:g}.",
    ]
