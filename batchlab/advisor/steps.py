"""The advisor's steps, each training through the store (``api.run_configs``) so that an
interrupted advice resumes and the report can show every run it rests on:

1. :func:`probe` - memory and throughput: one short run per batch size, smallest first
   (``memory.py``'s bounded search);
2. :func:`tune_base` - the lr at the base batch size, the grid extended when the best is at its edge;
3. :func:`measure_noise` - the exact B_simple at checkpoints of a pilot run, and the local
   critical batch size by branching from a checkpoint (Merrill et al. 2025);
4. :func:`sweep` - lr x B around the lrs the optimizer's rescaling rule predicts, 3 seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from batchlab.advisor import memory
from batchlab.advisor.plan import (CENTER_LR, LR_STEP, PROBE_STEPS, SHARES, SWEEP_SEEDS, Clock, epochs_within, lr_grid,
                                  predicted_epochs)
from batchlab.analysis import advice as analysis
from batchlab.analysis.selection import blown_up
from batchlab.api import prepare, run_configs
from batchlab.config import Phase
from batchlab.store import series_frame, summary_frame
from batchlab.targets import Target

BRANCH_SEEDS = 3  # trunks whose branches are averaged
BASE_STEPS = 600  # updates the base batch size tries first
POOL = 512  # training rows whose per-sample gradients give the exact B_simple
LR_POWER = {"sgd": 1.0, "adam": 0.5, "adamw": 0.5}  # lr ~ k^power when B grows k-fold (Goyal; Malladi)


@dataclass
class Job:
    """The user's data, model and fixed settings, and the store every step trains through;
    ``groups`` collects the run ids of each step (the advice's record keeps them)."""

    data: Any
    model: Any
    settings: dict[str, Any]
    db: Any
    n_train: int
    progress: Callable[[int], None] | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def optimizer(self) -> str:
        return self.settings.get("optimizer", "sgd")

    def train(self, group: str, *, force: bool = False, checkpoints: tuple[int, ...] = (), **axes):
        configs, dataset, net = prepare(self.data, self.model, **{**self.settings, **axes})
        result = run_configs(configs, dataset, net, db=self.db, force=force, progress=self.progress,
                             checkpoints=checkpoints)
        ids = self.groups.setdefault(group, [])
        ids += [c.run_id for c in configs if c.run_id not in ids]
        result.dataset, result.net = dataset, net
        return result


def frames(results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-epoch history, summary) of the runs of several ``train`` results."""
    runs = [r for result in results for r in result.runs]
    return series_frame(runs, "epoch"), summary_frame(runs)


def probe(job: Job, sizes: list[int], clock: Clock, cap: int | None) -> tuple[memory.MemorySearch, pd.DataFrame]:
    """Memory and throughput per batch size: each size trains one run alone for at least
    PROBE_STEPS updates (one epoch at least); seconds per update = its training time (compilation
    excluded, the evaluation pass after each epoch included) / its updates."""
    rows: list[dict] = []
    center = CENTER_LR[job.optimizer]

    def try_size(b: int) -> int | None:
        if rows and clock.used > clock.share("probe"):
            return None
        epochs = max(1, math.ceil(PROBE_STEPS * b / job.n_train))
        try:
            run = job.train("probe", batch_size=b, epochs=epochs, lr=center, seeds=[0]).runs[0]
        except Exception as exc:  # an allocator's out-of-memory error, whichever framework raised it
            text = str(exc)
            if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
                raise MemoryError(text.splitlines()[0][:120]) from None
            raise
        steps = int(run.history["step"][-1])
        rows.append({"batch_size": b, "seconds_per_step": run.train_seconds / max(steps, 1),
                     "seconds_per_epoch": run.train_seconds / epochs,
                     "samples_per_second": run.history["samples_seen"][-1] / max(run.train_seconds, 1e-9),
                     "compile_seconds": run.compile_seconds, "epochs": epochs, "steps": steps})
        peak = memory.peak_bytes()
        rows[-1]["peak_mib"] = peak / 2 ** 20
        return peak

    found = memory.search(sizes, try_size, memory.device_limit(), cap)
    table = pd.DataFrame(rows)
    if len(table):
        table["fits"] = table.batch_size <= (found.fits or 0)
    return found, table


def tune_base(job: Job, b0: int, throughput: pd.DataFrame, clock: Clock, target: Target):
    """The lr at ``b0``: seven lrs a factor LR_STEP apart around the optimizer's usual value, 2 seeds,
    as many epochs as the step's share of the budget allows; one more pair of lrs beyond the
    edge when the best lies at it. Returns (results, per-B table, epochs, lrs)."""
    row = throughput.set_index("batch_size").loc[b0]
    lrs = lr_grid(CENTER_LR[job.optimizer], 3, 3)
    most = epochs_within(clock.share("base"), row.seconds_per_epoch, len(lrs) * 2, row.compile_seconds)
    # First about BASE_STEPS updates (most targets a tuned lr reaches, in far less than the
    # share); the whole share only when no lr reached the target in them.
    epochs = min(most, max(1, math.ceil(BASE_STEPS * b0 / job.n_train)))
    results = [job.train("base", batch_size=b0, epochs=epochs, lr=lrs, seeds=2)]
    table = _table(results, target, {b0: row.seconds_per_step}, job.n_train)
    if math.isnan(table.lr.iloc[0]) and most > epochs:
        epochs = most
        results = [job.train("base", batch_size=b0, epochs=epochs, lr=lrs, seeds=2)]
        table = _table(results, target, {b0: row.seconds_per_step}, job.n_train)
    edge = table.lr_edge.iloc[0] if len(table) else ""
    if edge:
        beyond = lr_grid(max(lrs) if edge == "largest" else min(lrs), 0 if edge == "largest" else 2,
                         2 if edge == "largest" else 0)
        more = [lr for lr in beyond if lr not in lrs]
        results.append(job.train("base", batch_size=b0, epochs=epochs, lr=more, seeds=2))
        lrs += more
        table = _table(results, target, {b0: row.seconds_per_step}, job.n_train)
    return results, table, epochs, sorted(lrs)


def cohort_share(results, throughput: pd.DataFrame, b0: int) -> float:
    """A run's share of a vmapped cohort's time against training alone, measured on the base
    step: its cohort's seconds / (runs x epochs x the probe's seconds per epoch at b0); at most 1
    (counting runs as if one after another is the safe side)."""
    run = results[0].runs[0]
    alone = float(throughput.set_index("batch_size").seconds_per_epoch.get(b0, math.nan))
    share = run.train_seconds / (len(results[0].runs) * run.config.epochs * alone)
    return float(min(1.0, share)) if math.isfinite(share) and share > 0 else 1.0


def _table(results, target: Target, seconds_per_step: dict[int, float], n_train: int) -> pd.DataFrame:
    history, summary = frames(results)
    return analysis.per_batch(history, summary, target, seconds_per_step, n_train)[1]


def measure_noise(job: Job, b0: int, lr: float, epochs: int, epochs_to_target: float, largest: int,
                  clock: Clock) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(exact B_simple at the pilot's checkpoints, the branches' smoothed losses, the local
    critical batch size). The pilot is the base run (``b0``, ``lr``, seed 0) again with its
    parameters kept at 0, 1/4, 1/2, 3/4 and 1 x its epochs to the target; B_simple comes from the
    per-sample gradients of up to POOL training rows (their Gram matrix). Branches start at the
    last whole epoch before the target, at k x b0 (k = 1, 2, 4, ... up to ``largest``) with
    lr x k^power (the optimizer's rule), and all train the same number of samples."""
    branch_at = max(1, int(epochs_to_target))
    marks = sorted({0, *(int(round(f * epochs_to_target)) for f in (0.25, 0.5, 0.75, 1.0))} | {branch_at})
    marks = [e for e in marks if e <= epochs]
    start = clock.used
    pilot = job.train("pilot", batch_size=b0, epochs=epochs, lr=[lr], seeds=[0], force=True, checkpoints=tuple(marks))
    exact = _exact_noise(pilot, marks)
    after = max(1, math.ceil(0.5 * epochs_to_target))
    sizes = [b0 * 2 ** j for j in range(0, 20) if b0 * 2 ** j <= largest]
    rows = []
    for b in sizes:
        if b > b0 and clock.used - start > SHARES["noise"] * clock.budget:  # keep the sweep's share
            clock.cut.append(f"branches at B >= {b}")
            break
        k = b // b0
        rate = lr * k ** LR_POWER[job.optimizer]
        phases = [Phase(branch_at, b, rate)] if k > 1 else []
        runs = job.train("branches", batch_size=b0, epochs=branch_at + after, lr=[lr], seeds=BRANCH_SEEDS,
                         phases=phases).runs
        # One seed's branches differ by their data order as much as by their batch size: the
        # smoothed losses are averaged over BRANCH_SEEDS trunks (one compiled cohort).
        losses = [analysis.smoothed(r.history["train_loss"][branch_at + 1:])
                  if len(r.history["train_loss"]) == branch_at + after + 1 else math.inf for r in runs]
        finite = np.isfinite(losses).all() and len(losses) > 1  # a diverged trunk: the branch fell behind
        rows.append({"batch_size": b, "k": k, "lr": rate, "loss": float(np.mean(losses)) if finite else math.inf,
                     "loss_sd": float(np.std(losses, ddof=1)) if finite else math.nan,
                     "steps": int(runs[0].history["step"][-1] - runs[0].history["step"][branch_at])})
    branches = pd.DataFrame(rows)
    value, censored = analysis.local_critical_batch(branches.batch_size, branches.loss) if len(branches) \
        else (math.nan, False)
    local = {"value": value, "censored": censored, "epoch": branch_at, "samples": after * job.n_train,
             "tolerance": analysis.BRANCH_TOLERANCE}
    return exact, branches, local


def _exact_noise(pilot, marks: list[int]) -> pd.DataFrame:
    """|G|^2, tr(Sigma) and B_simple at each kept checkpoint of the pilot (none for a model with
    state, such as batch norm, whose per-sample gradients are not defined the same way)."""
    import jax.numpy as jnp

    from batchlab.instruments.gradients import gram_matrix, statistics_from_gram
    from batchlab.studies.gradient_noise import pool_rows

    run, dataset, net = pilot.runs[0], pilot.dataset, pilot.net
    rows = pool_rows(dataset.n_train, POOL, seed=0)
    x, y = jnp.asarray(dataset.x_train[rows]), jnp.asarray(dataset.y_train[rows])
    out = []
    for epoch in marks:
        if epoch not in run.checkpoints:
            continue
        try:
            stats = statistics_from_gram(gram_matrix(net, run.checkpoints[epoch], {}, x, y))
        except Exception:  # noqa: BLE001 - a stateful model: no exact statistics, said by their absence
            return pd.DataFrame(columns=["epoch", "noise_scale"])
        loss = float(run.history["train_loss"][epoch])
        out.append({"epoch": epoch, "train_loss": loss, **stats})
    return pd.DataFrame(out)


def sweep(job: Job, sizes: list[int], b0: int, base: dict, noise: float, throughput: pd.DataFrame,
          clock: Clock, rescaled: Callable[[int], dict]) -> list:
    """lr x B: at each size five lrs a factor LR_STEP apart around the lr the optimizer's rule predicts
    from the base (``rescaled(B)``: lr and the other optimizer settings), SWEEP_SEEDS seeds, the
    epochs that SAFETY x the predicted steps need. Sizes nearest the base train first; a size
    whose estimated time no longer fits the budget is cut (and said). A size's estimate: its
    probe's seconds per epoch x epochs x runs x ``base["cohort_share"]`` (what one run of the
    base's vmapped cohort cost against a run alone, measured) + its probe's compile time."""
    per = throughput.set_index("batch_size")
    order = sorted(sizes, key=lambda b: (abs(math.log2(b / b0)), b))
    results = []
    for b in order:
        settings = rescaled(b)
        center = settings.pop("lr")
        lrs = lr_grid(center, 2, 2) if b != b0 else base["lrs"]
        epochs = base["epochs"] if b == b0 else predicted_epochs(b, b0, base["steps"], noise, job.n_train)
        runs = len(lrs) * SWEEP_SEEDS
        estimate = per.seconds_per_epoch.get(b, math.nan) * epochs * runs * base["cohort_share"]
        estimate += per.compile_seconds.get(b, 0.0)
        if b != b0 and not estimate < clock.left:
            clock.cut.append(f"B={b} (needs about {estimate:.0f} s, {max(clock.left, 0):.0f} s left)")
            continue
        results.append(job.train("sweep", batch_size=b, epochs=epochs, lr=lrs, seeds=SWEEP_SEEDS, **settings))
    return results


def extend_edges(job: Job, table: pd.DataFrame, results: list, clock: Clock, rescaled: Callable[[int], dict]) -> int:
    """More lrs where the grid missed the best, while the budget allows (returns how many sizes
    were extended): one beyond the edge where the best lr lies at it; where no lr has a best, two
    below the grid when every lr was unstable (diverged or blew up), else the geometric midpoint
    between the largest stable lr (too slow) and the smallest unstable one above it."""
    extended = 0
    for _, row in table.iterrows():
        b = int(row.batch_size)
        runs = [r for result in results for r in result.runs if r.config.batch_size == b]
        new = _missed_lrs(row, runs)
        if not new or not runs:
            continue
        if clock.left < 0.1 * clock.budget:
            clock.cut.append(f"extending the lr grid at B={b}")
            continue
        settings = rescaled(b)
        settings.pop("lr")
        results.append(job.train("sweep", batch_size=b, epochs=runs[0].config.epochs,
                                 lr=[float(f"{lr:.3g}") for lr in new], seeds=SWEEP_SEEDS, **settings))
        extended += 1
    return extended


def _missed_lrs(row: pd.Series, runs: list) -> list[float]:
    """The lrs to add at one batch size (see :func:`extend_edges`); [] when its grid holds its best."""
    if row.lr_edge:
        return [float(row.lr) * (LR_STEP if row.lr_edge == "largest" else 1 / LR_STEP)]
    if not math.isnan(row.lr):
        return []
    unstable: dict[float, bool] = {}
    for r in runs:
        lr = r.config.optimizer.lr
        bad = r.status == "diverged" or bool(blown_up(r.history["train_loss"]))
        unstable[lr] = unstable.get(lr, True) and bad
    lrs = sorted(unstable)
    if all(unstable.values()):
        return [lrs[0] / LR_STEP, lrs[0] / LR_STEP ** 2]
    for low, high in zip(lrs, lrs[1:]):
        if not unstable[low] and unstable[high]:
            return [math.sqrt(low * high)]
    return []


def summary_of(exact: pd.DataFrame) -> float:
    """B_simple at the pilot's last checkpoint (NaN if none measured)."""
    values = exact.noise_scale.to_numpy(float) if "noise_scale" in exact else np.array([])
    return float(values[-1]) if len(values) else math.nan
