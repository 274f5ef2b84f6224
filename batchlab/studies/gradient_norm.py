"""Shen (2018): do per-sample gradients compete? Gradient norm vs batch size (``science.md`` 3.2, 4).

The "gradient competition" hypothesis says the per-sample gradients of a batch cancel, so a
bigger batch gives a smaller gradient per sample. Shen measured the opposite. One training
run (MNIST 5k subset, MLP 784-256-256-10 ReLU, SGD lr 0.01 at B=64, batch-mean loss) keeps its
parameters after 2 epochs (early regime) and 30 epochs (late regime). At each checkpoint
``measure_checkpoint`` (``studies/gradient_noise.py``) takes the per-sample gradients of a pool
of P training rows and draws ``trials`` random batches (without replacement from the pool)
for every B in 1..1024; the squared norm of each batch's summed gradient is exact from the
Gram matrix. Batch-mean norms are the batch-sum norms divided by B. Theory:
E||g_B||^2 = ||G||^2 + tr(Sigma)/B x (P-B)/(P-1) (batch mean; x B^2 for the batch sum).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from batchlab.analysis.findings import Finding, compare, trend, verdict_from_interval
from batchlab.analysis.gradient_norm import (coverage_verdict, exponent, joint_verdict, noise_scale_fit,
                                             theory_check)
from batchlab.errors import BatchlabError
from batchlab.studies.base import Checkpoint, CheckpointInstrument, FigureSpec, Grid, Study, StudyData

SOURCE = "Shen, Effect of batch size on training dynamics (2018)"
THEORY = "McCandlish et al. 2018"
LABEL = "training run"
SAMPLINGS = ("without", "with")


def grids(s: dict) -> list[Grid]:
    """The one training run whose checkpoints are measured."""
    return [Grid(LABEL, dict(data=s["data"], model="mlp", hidden=s["hidden"], batch_size=s["batch_size"],
                             epochs=max(s["at_epochs"]), lr=s["lr"], momentum=s["momentum"], seeds=[s["seed"]]))]


def pool_rows(n_train: int, pool: int, seed: int) -> np.ndarray:
    """Sorted indices of the P = min(N, pool) training rows whose per-sample gradients are
    taken (all rows when the pool covers the training set), as ``gradient_noise.run`` picks them."""
    size = min(n_train, pool)
    if size >= n_train:
        return np.arange(n_train)
    return np.sort(np.random.default_rng(seed).choice(n_train, size, replace=False))


def instrument_name(s: dict) -> str:
    """The records' name carries the measurement settings: the store keys measurements by
    (run, instrument, epoch) only, so other settings must not read these records back."""
    sizes = s["batch_sizes"]
    return (f"gradient_norm(trials={s['trials']}, B={','.join(map(str, sizes))}, pool={s['pool']}, "
            f"{s['sampling']}, seed={s['seed']})")


def check(s: dict) -> None:
    """Reject measurement settings before anything trains."""
    from batchlab.data import load_dataset, resolve_data_config

    if s["sampling"] not in SAMPLINGS:
        raise BatchlabError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {s['sampling']!r}")
    if s["trials"] < 2:
        raise BatchlabError(f"trials must be >= 2 (findings need intervals), got {s['trials']}")
    if len(s["at_epochs"]) < 2 or min(s["at_epochs"]) < 1:
        raise BatchlabError(f"at_epochs needs two or more epochs >= 1 (early and late), got {s['at_epochs']}")
    pool = min(load_dataset(resolve_data_config(s["data"])).n_train, s["pool"])
    bad = [b for b in s["batch_sizes"] if not 1 <= b <= pool]
    if bad or len(s["batch_sizes"]) < 2:
        raise BatchlabError(f"batch sizes must be two or more values in 1..{pool} (the pool of rows), got "
                            f"{s['batch_sizes']}")


def checkpoints(s: dict) -> list[CheckpointInstrument]:
    check(s)
    return [CheckpointInstrument(instrument_name(s), tuple(sorted(set(s["at_epochs"]))), _measure(s))]


def _measure(s: dict):
    def measure(cp: Checkpoint) -> list[dict]:
        """Rows of three kinds: the checkpoint's statistics, the per-B summary points of
        ``measure_checkpoint``, and the per-trial squared batch-sum norms behind them."""
        import jax.numpy as jnp

        from batchlab.instruments import gradients
        from batchlab.studies.gradient_noise import measure_checkpoint

        rows = pool_rows(cp.dataset.n_train, s["pool"], s["seed"])
        x, y = jnp.asarray(cp.dataset.x_train[rows]), jnp.asarray(cp.dataset.y_train[rows])
        sizes, seed = [int(b) for b in s["batch_sizes"]], s["seed"] + cp.epoch
        stats, points = measure_checkpoint(cp.model, cp.params, x, y, sizes, trials=s["trials"],
                                           reductions=("sum", "mean"), sampling=s["sampling"], seed=seed,
                                           lr=cp.config.optimizer.lr, sharpness=s["sharpness"])
        # measure_checkpoint keeps only summaries; the findings need the trials themselves. Same
        # Gram matrix, same seed and sampling: the same batches are drawn again.
        k = gradients.gram_matrix(cp.model, cp.params, {}, x, y)
        draws = gradients.monte_carlo(k, sizes, s["trials"], seed, replace=s["sampling"] == "with")
        return ([{"kind": "statistics", **stats}] + [{"kind": "point", **p} for p in points]
                + [{"kind": "trials", "batch_size": b, "sq_norms_sum": draws[b].tolist()} for b in sizes])
    return measure


def _records(data: StudyData, s: dict, kind: str) -> pd.DataFrame:
    m = data.measurements
    mine = m[(m.instrument == instrument_name(s)) & (m.group == LABEL)] if "kind" in m else m.iloc[:0]
    if mine.empty:
        raise BatchlabError(f"the store holds no {instrument_name(s)} records for this run: did it stop "
                            f"(diverge) before checkpoint epochs {s['at_epochs']}?")
    rows = mine[mine.kind == kind]
    return rows.dropna(axis=1, how="all").reset_index(drop=True)


def trials_table(data: StudyData, s: dict) -> pd.DataFrame:
    """One row per epoch x B x trial: the squared norm of the batch-sum gradient and its norm."""
    records = _records(data, s, "trials")
    frame = records[["epoch", "batch_size", "sq_norms_sum"]].explode("sq_norms_sum", ignore_index=True)
    frame["sq_norm_sum"] = frame.pop("sq_norms_sum").astype(float)
    frame["batch_size"] = frame.batch_size.astype(int)
    frame["trial"] = frame.groupby(["epoch", "batch_size"]).cumcount()
    frame["norm_sum"] = np.sqrt(np.maximum(frame.sq_norm_sum, 0.0))
    return frame[["epoch", "batch_size", "trial", "sq_norm_sum", "norm_sum"]]


def statistics_table(data: StudyData, s: dict, trials: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: ||G||^2, tr(Sigma), B_simple (exact over the pool), the fitted exponent k
    of E||batch-sum g_B||^2 ~ B^k over all B and over the small B (B <= B_simple/4, where the
    noise term is at least 4x the mean-gradient term), each with a bootstrap interval, and
    B_simple re-estimated from the Monte-Carlo means (weighted regression on f(B)/B)."""
    stats = _records(data, s, "statistics").drop(columns=["run_id", "group", "instrument", "kind"])
    rows = []
    for row in stats.sort_values("epoch").to_dict("records"):
        at = trials[trials.epoch == row["epoch"]]
        sizes = sorted(at.batch_size.unique())
        small = [b for b in sizes if b <= row["noise_scale"] / 4]
        for name, chosen in (("exponent", sizes), ("exponent_small", small)):
            iv = exponent(chosen, [at.loc[at.batch_size == b, "sq_norm_sum"] for b in chosen], seed=s["seed"])
            row.update({name: iv.mean, f"{name}_low": iv.low, f"{name}_high": iv.high})
        row["small_batch_max"] = max(small) if small else math.nan
        per_b = at.assign(sq_mean=at.sq_norm_sum / at.batch_size.astype(float) ** 2).groupby("batch_size").sq_mean
        fit = noise_scale_fit(sizes, per_b.mean()[sizes], per_b.sem()[sizes], int(row["pool"]),
                              replace=s["sampling"] == "with")
        row["noise_scale_mc"] = fit["noise_scale"]
        rows.append(row)
    return pd.DataFrame(rows)


def analyse(data: StudyData, s: dict) -> dict[str, pd.DataFrame]:
    points = _records(data, s, "point").drop(columns=["run_id", "group", "instrument", "kind"])
    points = points.sort_values(["epoch", "reduction", "batch_size"], ascending=[True, False, True])
    trials = trials_table(data, s)
    sums = points[points.reduction == "sum"]
    coverage = theory_check(trials, sums)
    # The same intervals for the batch-mean loss: its squared norm is the batch sum's / B^2.
    scale = np.where(points.reduction == "sum", 1.0, 1.0 / points.batch_size.to_numpy(float) ** 2)
    bounds = points[["epoch", "batch_size"]].merge(coverage, on=["epoch", "batch_size"], how="left")
    points["mean_sq_low"] = bounds.mean_sq_low.to_numpy() * scale
    points["mean_sq_high"] = bounds.mean_sq_high.to_numpy() * scale
    points["covered"] = bounds.covered.to_numpy()
    return {"points": points.reset_index(drop=True), "theory_check": coverage,
            "statistics": statistics_table(data, s, trials), "trials": trials}


def _describe(s: dict) -> str:
    widths = "-".join(str(h) for h in s["hidden"])
    momentum = f", momentum {s['momentum']:g}" if s["momentum"] else ""
    return f"{s['data']} MLP (hidden {widths}, ReLU), SGD lr {s['lr']:g}{momentum} at B={s['batch_size']}"


def _figure(tables, s):
    from batchlab.plots.gradient_noise import gradient_norm_figure

    epochs = " and ".join(str(e) for e in sorted(set(s["at_epochs"])))
    pool = int(tables["statistics"].pool.iloc[0])
    return gradient_norm_figure(tables["points"], (
        f"Gradient norm vs batch size: {_describe(s)}, checkpoints after epochs {epochs}\n"
        f"{s['trials']} random batches per B from a pool of P={pool} training rows; "
        "markers: RMS over the trials, band: 5%..95% of the trials, dashed: theory"))


def _per_sample_figure(tables, s):
    from batchlab.plots.gradient_norm import sq_norm_per_sample_figure

    return sq_norm_per_sample_figure(tables["theory_check"], tables["statistics"], (
        f"Squared batch-sum gradient norm vs theory: {_describe(s)}, {s['trials']} batches per B"))


def findings(tables: dict[str, pd.DataFrame], s: dict) -> list[Finding]:
    trials, stats, coverage = tables["trials"], tables["statistics"], tables["theory_check"]
    out = []
    for epoch in sorted(trials.epoch.unique()):
        at = trials[trials.epoch == epoch]
        out += [_sum_grows(at, epoch), _mean_falls(at, epoch),
                _exponent(stats[stats.epoch == epoch].iloc[0], epoch),
                _theory(coverage[coverage.epoch == epoch], epoch, s["sampling"])]
    return out + [_early_vs_late(trials)]


def _by_size(at: pd.DataFrame, column: str) -> tuple[list[int], list[pd.Series]]:
    sizes = sorted(int(b) for b in at.batch_size.unique())
    return sizes, [at.loc[at.batch_size == b, column] for b in sizes]


def _sum_grows(at: pd.DataFrame, epoch: int) -> Finding:
    sizes, norms = _by_size(at, "norm_sum")
    slope, verdict = trend(sizes, norms, "increasing")
    return Finding(f"epoch {epoch}: with the loss summed over the batch, the mean gradient norm grows with B "
                   "(against gradient competition)", SOURCE,
                   f"mean ||g_B|| {norms[0].mean():.3g} at B={sizes[0]} -> {norms[-1].mean():.3g} at "
                   f"B={sizes[-1]}; slope {slope.format(3)} per doubling of B (least squares on log2 B, "
                   f"bootstrap over {slope.n} trials per B)", verdict)


def _mean_falls(at: pd.DataFrame, epoch: int) -> Finding:
    sizes, norms = _by_size(at.assign(norm_mean=at.norm_sum / at.batch_size), "norm_mean")
    slope, verdict = trend(sizes, norms, "decreasing")
    return Finding(f"epoch {epoch}: with the batch-mean loss, the gradient norm falls with B (towards ||G||)", THEORY,
                   f"mean ||g_B|| {norms[0].mean():.3g} at B={sizes[0]} -> {norms[-1].mean():.3g} at B={sizes[-1]}; "
                   f"slope {slope.format(3)} per doubling of B (bootstrap over trials)", verdict)


def _exponent(row: pd.Series, epoch: int) -> Finding:
    """k over all B in (1, 2) and k at small B nearer 1 than 2: three one-sided contrasts."""
    parts = [verdict_from_interval(row.exponent_low - 1, row.exponent_high - 1, 1),
             verdict_from_interval(2 - row.exponent_high, 2 - row.exponent_low, 1),
             verdict_from_interval(1.5 - row.exponent_small_high, 1.5 - row.exponent_small_low, 1)]
    small = (f"B <= {row.small_batch_max:g}" if math.isfinite(row.small_batch_max)
             else "no B below B_simple/4")
    return Finding(f"epoch {epoch}: the squared batch-sum gradient norm grows like B^k with k between 1 and 2, "
                   "near 1 (closer to 1 than to 2) at small B where B||G||^2 << tr(Sigma)", SOURCE,
                   f"k = {_iv(row, 'exponent')} over all B; k = {_iv(row, 'exponent_small')} over {small} "
                   f"(B_simple = {row.noise_scale:,.0f}); 95% bootstrap over trials", joint_verdict(parts))


def _iv(row: pd.Series, name: str) -> str:
    if not math.isfinite(row[f"{name}_low"]):
        return f"{row[name]:.3g} (no interval)"
    return f"{row[name]:.3g} [{row[f'{name}_low']:.3g}, {row[f'{name}_high']:.3g}]"


def _theory(rows: pd.DataFrame, epoch: int, sampling: str) -> Finding:
    missed = rows[~rows.covered.astype(bool)]
    worst = rows.relative_error.abs().idxmax()
    where = ("every B" if missed.empty else
             "B in {" + ", ".join(str(int(b)) for b in missed.batch_size) + "} not covered: " + ", ".join(
                 f"B={int(r.batch_size)} measured {r.mean_sq_norm:.4g} [{r.mean_sq_low:.4g}, {r.mean_sq_high:.4g}] "
                 f"vs theory {r.theory_sq_norm:.4g}" for r in missed.itertuples()))
    factor = "(P-B)/(P-1)" if sampling == "without" else ""
    return Finding(f"epoch {epoch}: the measured E||g_B||^2 matches the theory B^2||G||^2 + B tr(Sigma){factor} "
                   "at every B", THEORY,
                   f"covered at {len(rows) - len(missed)} of {len(rows)} B ({where}); largest relative error "
                   f"{rows.relative_error[worst]:+.1%} at B={int(rows.batch_size[worst])}; simultaneous 95% "
                   f"t-intervals over {int(rows.trials.min())} trials (Bonferroni over {len(rows)} B)",
                   coverage_verdict(list(rows.covered.astype(bool))))


def _early_vs_late(trials: pd.DataFrame) -> Finding:
    early, late = int(trials.epoch.min()), int(trials.epoch.max())
    sizes = sorted(int(b) for b in trials.batch_size.unique())
    diffs = []
    for b in sizes:
        pick = trials[trials.batch_size == b]
        diffs.append((b, *compare(pick[pick.epoch == early].norm_sum, pick[pick.epoch == late].norm_sum, "greater")))
    smaller = [b for b, _, v in diffs if v != "agrees"]
    ends = "; ".join(f"B={b}: {d.format(3)}" for b, d, _ in (diffs[0], diffs[-1]))
    return Finding(f"the early checkpoint (epoch {early}) has larger batch gradients than the late one "
                   f"(epoch {late}) at every B", SOURCE,
                   f"difference of mean ||g_B|| (batch sum), early - late, Welch 95%: {ends}; larger at "
                   f"{len(sizes) - len(smaller)} of {len(sizes)} B"
                   + (f" (not at B in {smaller})" if smaller else ""),
                   joint_verdict([v for _, _, v in diffs]))


def notes(tables: dict[str, pd.DataFrame], s: dict) -> list[str]:
    stats = tables["statistics"]
    scales = "; ".join(f"epoch {int(r.epoch)}: B_simple = tr(Sigma)/||G||^2 = {r.trace:.3g}/{r.grad_sq:.3g} = "
                       f"{r.noise_scale:,.0f} (weighted regression of the Monte-Carlo means on f(B)/B: "
                       f"{r.noise_scale_mc:,.0f})"
                       for r in stats.itertuples())
    return [f"- Simple noise scale over the P={int(stats.pool.iloc[0])}-row pool, {scales}. Below B_simple the "
            "noise term dominates E||g_B||^2, so the batch-sum gradient's squared norm grows about linearly in B "
            "(per-sample gradients add like a random walk: they neither cancel nor align); above it, "
            "quadratically.",
            "- Gradient competition would make the batch-sum norm stop growing with B. A norm growing like "
            "sqrt(B) means nearly orthogonal per-sample gradients; the batch-mean norm then falls like "
            "1/sqrt(B) towards ||G||.",
            "- gradient_norm_vs_batch compares the RMS norm sqrt(mean ||g_B||^2) with the theory "
            "sqrt(E||g_B||^2); the findings on growth use the mean norm (Shen's quantity), which lies below the "
            "RMS by Jensen's inequality.",
            "- sq_norm_per_sample_vs_batch divides the squared batch-sum norm by B: flat at tr(Sigma) where it "
            "grows linearly, rising past B_simple; its right panel is the theory check of the findings.",
            f"- Batches are drawn {s['sampling']} replacement from the pool, so the noise term carries the factor "
            "f(B) = (P-B)/(P-1)" + (" (1 here)" if s["sampling"] == "with" else "") + "."]


STUDY = Study(
    name="gradient-norm",
    question="Do per-sample gradients compete: does a bigger batch give a smaller gradient per sample?",
    source=SOURCE,
    defaults=dict(data="mnist", hidden=(256, 256), batch_size=64, lr=0.01, momentum=0.0, seed=0,
                  at_epochs=(2, 30), trials=1000, batch_sizes=tuple(2 ** i for i in range(11)), pool=4096,
                  sampling="without", sharpness=False),
    quick=dict(data="digits", at_epochs=(1, 3), trials=200, batch_sizes=tuple(2 ** i for i in range(9))),
    grids=grids,
    checkpoints=checkpoints,
    analyse=analyse,
    figures=(FigureSpec("gradient_norm_vs_batch", _figure, "points"),
             FigureSpec("sq_norm_per_sample_vs_batch", _per_sample_figure, "theory_check")),
    findings=findings,
    notes=notes,
    minutes=(1.0, 0.2),
)
