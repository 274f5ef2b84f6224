"""Regularisation meets batch size: over-fitting and the large-batch gap with dropout, weight
decay, batch norm and ghost batch norm (the regularization study's analysis and findings;
``studies/regularization.py`` declares the runs).

Each arm trains the same MLP on the same small training set for every batch size B, the same
seeds (so the same data order, and the same dense weights at initialisation in every arm),
long enough that without regularisation the test loss turns up. Per run (:func:`run_table`):
final and best test accuracy and loss, the generalization gap (train minus test accuracy) at
the end, the end-to-best test-loss ratio, the epoch of the lowest test loss (where
over-fitting starts, when it does) and the run's learning-curve diagnosis
(``batchlab/diagnosis.py``). Per arm and B: each with its 95% interval over seeds.

Every function here reads DataFrames (the store's per-epoch ``history`` and per-run
``summary``, with ``arm`` read from the group label), never training code. References:
``science.md`` sections 1 and 5; Srivastava et al. (2014) dropout; Krogh & Hertz (1992)
weight decay; Ioffe & Szegedy (2015) batch norm; Hoffer, Hubara & Soudry (2017) ghost batch
norm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from batchlab.analysis.curves import curves_table, per_run_series
from batchlab.analysis.findings import (PROPORTION, PROPORTION_DIFFERENCE, Finding, compare, decided, interval,
                                        interval_table, joint_verdict, proportion, trend, unmet)
from batchlab.analysis.intervals import Interval, geometric_t
from batchlab.analysis.study_data import StudyData
from batchlab.diagnosis import RISE, diagnose

SEED_SOURCE = "the seed articles on batch size and epochs (noise from dropout or batch norm at a moderate B)"
HOFFER = "Hoffer, Hubara & Soudry, Train longer, generalize better (2017): ghost batch norm"
NONE, DROPOUT, DECAY, BATCH_NORM, GHOST = "none", "dropout", "weight decay", "batch norm", "ghost batch norm"
ARMS = (NONE, DROPOUT, DECAY, BATCH_NORM, GHOST)
SOURCES = {DROPOUT: "Srivastava et al., Dropout (2014)", DECAY: "Krogh & Hertz, weight decay (1992)",
           BATCH_NORM: "Ioffe & Szegedy, Batch normalization (2015)", GHOST: HOFFER}

QUANTITIES = ("final_test_acc", "best_test_acc", "final_gap", "final_test_loss", "best_test_loss", "loss_ratio",
              "best_epoch", "overfit")


def label(arm: str, batch_size: int) -> str:
    """The group label of one arm at one batch size (the study's grids are labelled so)."""
    return f"{arm}, B={batch_size}"


def _arm(frame: pd.DataFrame) -> pd.Series:
    return frame.group.str.rsplit(", B=", n=1).str[0]


def run_table(history: pd.DataFrame) -> pd.DataFrame:
    """One row per run: arm, B, seed and what its learning curves say.

    ``final_*``: the last epoch's; ``best_test_acc``/``best_test_loss``: over epochs >= 1;
    ``final_gap`` = train - test accuracy at the end; ``loss_ratio`` = final / lowest test loss
    (>= 1; 1 + RISE or more is the diagnosis' over-fit); ``best_epoch``: the epoch of the
    lowest test loss; ``fit``: the diagnosis, ``overfit``: 1 when it says over-fit."""
    rows = []
    for run_id, run in per_run_series(history).groupby("run_id", sort=False):
        trained = run[run.epoch >= 1]
        last = run.iloc[-1]
        found = diagnose({k: run[k].to_numpy() for k in ("train_loss", "test_loss", "test_acc")})
        rows.append({
            "run_id": run_id, "arm": last.arm, "batch_size": int(last.batch_size), "seed": int(last.seed),
            "final_test_acc": last.test_acc, "best_test_acc": trained.test_acc.max(),
            "final_train_acc": last.train_acc, "final_gap": last.train_acc - last.test_acc,
            "final_test_loss": last.test_loss, "best_test_loss": trained.test_loss.min(),
            "loss_ratio": last.test_loss / trained.test_loss.min(),
            "best_epoch": int(trained.epoch.to_numpy()[np.nanargmin(trained.test_loss.to_numpy())]),
            "updates": int(last.step), "fit": str(found), "overfit": float("over-fit" in found.labels)})
    order = {arm: i for i, arm in enumerate(ARMS)}
    table = pd.DataFrame(rows)
    return table.sort_values(["batch_size", "arm", "seed"], key=lambda c: c.map(order) if c.name == "arm" else c,
                             kind="stable").reset_index(drop=True)


def ratio_interval(values) -> Interval:
    """Geometric mean and 95% t-interval (log scale) of final / lowest test loss, cut to the
    ratio's range [1, inf) (the lowest is over epochs that include the last); cutting to the
    range the true value lies in keeps the coverage (``analysis/intervals.py``)."""
    iv = geometric_t(values)
    if not iv.given:
        return iv
    return Interval(iv.mean, max(iv.low, 1.0), max(iv.high, 1.0), iv.n, iv.method + ", cut to >= 1")


def methods(epochs: int) -> dict:
    """Each summarised quantity with the interval that respects its range."""
    return {"final_test_acc": proportion, "best_test_acc": proportion,
            "final_gap": lambda v: interval(v, PROPORTION_DIFFERENCE), "final_test_loss": geometric_t,
            "best_test_loss": geometric_t, "loss_ratio": ratio_interval,
            "best_epoch": lambda v: interval(v, (1, epochs)), "overfit": lambda v: interval(v, PROPORTION)}


def by_arm(runs: pd.DataFrame, epochs: int) -> pd.DataFrame:
    """Per arm and B: seeds, mean updates, and each quantity's estimate and 95% interval."""
    def before(group: pd.DataFrame) -> dict:
        return {"seeds": len(group), "updates": float(group.updates.mean())}

    table = interval_table(runs, ["arm", "batch_size"], methods(epochs), before=before, sort=False)
    return table.sort_values(["batch_size"], kind="stable").reset_index(drop=True)


def gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Per regulariser and B: its final test accuracy minus that of no regularisation (Welch
    95% interval over seeds, within [-1, 1])."""
    rows = []
    for (arm, b), group in runs[runs.arm != NONE].groupby(["arm", "batch_size"], sort=False):
        base = runs[(runs.arm == NONE) & (runs.batch_size == b)]
        diff, _ = compare(group.final_test_acc, base.final_test_acc, "greater", PROPORTION_DIFFERENCE)
        rows.append({"arm": arm, "batch_size": b, "gain": diff.mean, "gain_low": diff.low, "gain_high": diff.high,
                     "method": diff.method})
    return pd.DataFrame(rows)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    history = data.history.assign(arm=_arm(data.history))
    runs = run_table(history)
    curves = curves_table(history, ["arm", "batch_size"])
    return {"runs": runs, "by_arm": by_arm(runs, s["epochs"]), "gains": gains(runs), "curves": curves}


def moderate(sizes: list[int]) -> int:
    """The moderate batch size of the study: the middle one (the lower middle of an even count)."""
    return sorted(sizes)[(len(sizes) - 1) // 2]


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    runs = tables["runs"]
    sizes = sorted(int(b) for b in runs.batch_size.unique())
    out = [_no_late_overfit(runs, arm, moderate(sizes)) for arm in (DROPOUT, BATCH_NORM)]
    out.append(_ghost_narrows_gap(runs, sizes, s["ghost_size"]))
    out += [_gain_everywhere(runs, arm, sizes) for arm in (DROPOUT, DECAY, BATCH_NORM)]
    out.append(_decay_gain_trend(runs, sizes))
    return out


def _of(runs: pd.DataFrame, arm: str, b: int) -> pd.DataFrame:
    return runs[(runs.arm == arm) & (runs.batch_size == b)].sort_values("seed")


def _no_late_overfit(runs: pd.DataFrame, arm: str, b: int) -> Finding:
    """The seed's claim: with ``arm`` at a moderate B, long training does not over-fit (the test
    loss ends within 1 + RISE of its lowest), tested where no regularisation does over-fit."""
    limit = 1 + RISE
    ratio, plain = ratio_interval(_of(runs, arm, b).loss_ratio), ratio_interval(_of(runs, NONE, b).loss_ratio)
    verdict = "agrees" if ratio.high < limit else "disagrees" if ratio.low > limit else "inconclusive"
    finding = decided(
        f"with {arm} at a moderate B (B={b}), long training does not over-fit: the test loss at the last epoch "
        f"stays within {limit:g}x its lowest (verdict: agrees if the 95% interval of the ratio lies below {limit:g}, "
        f"disagrees if above)", SEED_SOURCE,
        f"final / lowest test loss {ratio.format(3)} with {arm}, {plain.format(3)} without regularisation "
        f"(geometric means, 95% t on log values over seeds)", verdict, ratio)
    if plain.given and not plain.low > limit:
        return unmet(finding, f"without regularisation the test loss at B={b} does not clearly over-fit either "
                              f"(ratio {plain.format(3)}), so this set does not test the claim")
    return finding


def _ghost_narrows_gap(runs: pd.DataFrame, sizes: list[int], ghost_size: int) -> Finding:
    """Hoffer et al.: at a large B, ghost batch norm (statistics over ghost_size rows) reaches a
    higher test accuracy than batch norm over the whole batch, narrowing the large-batch gap."""
    small, large = sizes[0], sizes[-1]
    ghost, plain = _of(runs, GHOST, large), _of(runs, BATCH_NORM, large)
    diff, verdict = compare(ghost.final_test_acc, plain.final_test_acc, "greater", PROPORTION_DIFFERENCE)
    gap, _ = compare(_of(runs, BATCH_NORM, small).final_test_acc, plain.final_test_acc, "greater",
                     PROPORTION_DIFFERENCE)
    finding = decided(
        f"ghost batch norm (statistics over {ghost_size} rows) narrows the large-batch generalization gap: at "
        f"B={large} its final test accuracy is above that of batch norm over the whole batch", HOFFER,
        f"ghost minus batch norm at B={large}: {diff.format(2, 100)} points (95% {diff.method}); the gap it narrows, "
        f"batch norm at B={small} minus at B={large}: {gap.format(2, 100)} points; test acc ghost "
        f"{proportion(ghost.final_test_acc).format(3)}, batch norm {proportion(plain.final_test_acc).format(3)}",
        verdict, diff)
    if ghost_size >= large:
        return unmet(finding, f"the ghost size {ghost_size} is not below B={large}: ghost batch norm is batch norm")
    if gap.given and not gap.low > 0:
        return unmet(finding, f"batch norm shows no clear large-batch gap here (B={small} minus B={large}: "
                              f"{gap.format(2, 100)} points), so there is no gap to narrow")
    return finding


def _gain_everywhere(runs: pd.DataFrame, arm: str, sizes: list[int]) -> Finding:
    """``arm`` raises the final test accuracy over no regularisation at every B."""
    parts, verdicts, intervals = [], [], []
    for b in sizes:
        diff, verdict = compare(_of(runs, arm, b).final_test_acc, _of(runs, NONE, b).final_test_acc, "greater",
                                PROPORTION_DIFFERENCE)
        parts.append(f"B={b}: {diff.format(2, 100)}")
        verdicts.append(verdict)
        intervals.append(diff)
    return decided(f"{arm} raises the final test accuracy over no regularisation, at every batch size", SOURCES[arm],
                   f"{arm} minus none, points (95% Welch over seeds): " + "; ".join(parts),
                   joint_verdict(verdicts), *intervals)


def _decay_gain_trend(runs: pd.DataFrame, sizes: list[int]) -> Finding:
    """At a fixed lr, decay and number of epochs, weight decay shrinks the weights by (1 - lr wd)
    per update, E N / B updates in all: its effect should fade as B grows. Paired by seed (the
    two arms share initial weights and data order)."""
    groups = []
    for b in sizes:
        pair = _of(runs, DECAY, b).merge(_of(runs, NONE, b), on="seed", suffixes=("", "_none"))
        groups.append((pair.final_test_acc - pair.final_test_acc_none).to_numpy())
    slope, verdict = trend(sizes, groups, "decreasing")
    listed = "; ".join(f"B={b}: {interval(g, PROPORTION_DIFFERENCE).format(2, 100)}" for b, g in zip(sizes, groups))
    return decided("at a fixed lr, decay and number of epochs, weight decay's gain in test accuracy shrinks as B grows "
                   "(it compounds once per update, and a larger B makes fewer)", "(1 - lr wd)^(E N / B); "
                   "Bergsma et al. (2025) on the decay's timescale", f"slope {slope.format(2, 100)} points per "
                   f"doubling of B (95% {slope.method}); paired gains by B: {listed}", verdict, slope)


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    runs = tables["runs"]
    fits = "; ".join(f"{arm}: {_fit_counts(group)}" for arm, group in runs.groupby("arm", sort=False))
    return [
        f"The ghost arm is trained only at B above the ghost size ({s['ghost_size']}): at B <= the ghost size, "
        "ghost batch norm is plain batch norm, the same runs.",
        f"Every B uses the same learning rate ({s['lr']:g}, momentum {s['momentum']:g}) and the same {s['epochs']} "
        "epochs, so a larger B makes fewer updates; part of any large-batch gap is that (Hoffer et al.'s 'train "
        "longer'), not B alone.",
        "The test set is the validation set: 'best' test accuracy and loss are chosen on the rows they are read on, "
        "so they are optimistic; the final values are not.",
        f"Learning-curve diagnosis (batchlab/diagnosis.py), runs of each arm over all B and seeds: {fits}.",
        f"Settings: dropout {s['dropout']:g} after each hidden activation; weight decay {s['weight_decay']:g} as L2 "
        f"in SGD; batch norm before each hidden activation, running statistics for evaluation; ghost batches of "
        f"{s['ghost_size']} rows.",
    ]


def _fit_counts(group: pd.DataFrame) -> str:
    """How many of a group's runs carry each diagnosis label, with where over-fitting starts."""
    labels = [label.split("@")[0] for fit in group.fit for label in fit.split("+")]
    counts = pd.Series(labels).value_counts()
    onset = group[group.overfit == 1].best_epoch
    parts = [f"{name} {count}/{len(group)}" + (f" (from epoch {onset.min()}-{onset.max()}, median "
                                               f"{onset.median():g})" if name == "over-fit" else "")
             for name, count in counts.items()]
    return ", ".join(parts)
