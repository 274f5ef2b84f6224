"""The torch backend's training step and epoch: where a batch becomes an update.

Read top to bottom, as ``engine/step.py``: the batch's rows -> loss and gradient (whole,
micro-batches, or two halves of alternate rows for the noise instruments) -> optimizer
update -> per-step outputs. Everything carries a leading run axis: R stacked runs trained
in one vmapped forward pass, or one run (R = 1) of an ordinary module (see ``torch_runs.py``).

Unlike the compiled JAX epoch, eager torch needs no fixed shapes: a partial last batch is
just its real rows (the mean is over them, as the JAX engine's masked mean). A run whose
batch loss is not finite keeps training to the epoch's end here; the caller restores its
state at the epoch's start, as the JAX engine does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from batchlab.engine.step_stats import NORMS, uses_noise
from batchlab.engine.torch_optim import Hyper, TorchOptimizer


class Group(Protocol):
    """Runs trained together: tensors have a leading run axis of length ``runs``."""

    runs: int
    leaves: list[torch.Tensor]  # trained parameters, (R, ...) each, as aliases that do not require grad
    init_leaves: list[torch.Tensor] | None  # theta_0, when ``dist_init`` is measured
    opt_state: list[list[torch.Tensor]]
    lr: Hyper
    momentum: Hyper

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor: ...  # (R, c, ...) -> (R, c, K)
    def grads(self, loss: torch.Tensor) -> list[torch.Tensor]: ...  # d loss / d leaves, (R, ...) each
    def get_state(self) -> list[torch.Tensor]: ...  # model state (batch-norm statistics) that training moves
    def set_state(self, state: list[torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class EpochPlan:
    """What every step of an epoch does (fixed for the cohort's epoch)."""

    batch_size: int
    steps: int
    counts: np.ndarray  # real rows of each batch
    task: str
    reduction: str
    micro_batch: int | None
    instruments: tuple[str, ...]
    optimizer: TorchOptimizer

    @cached_property
    def norms(self) -> tuple[str, ...]:
        return tuple(n for n in NORMS if n in self.instruments)

    @cached_property
    def halves(self) -> bool:
        return uses_noise(self.instruments)


def squared_errors(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row squared error, averaged over the output dims (``engine/losses.py``): ``out`` is
    (R, c) or (R, c, k...), ``y`` holds as many targets per row."""
    errors = (out - y.reshape(out.shape)).square()
    return errors.flatten(2).mean(-1) if errors.dim() > 2 else errors


def row_losses(out: torch.Tensor, y: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss and score (R, c), as ``engine/losses.row_losses``: cross-entropy and a hit
    (classification), or the squared error twice (regression)."""
    if task == "regression":
        errors = squared_errors(out, y)
        return errors, errors
    loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").reshape(y.shape)
    return loss, (out.argmax(-1) == y).to(out.dtype)


def batch_loss(out: torch.Tensor, y: torch.Tensor, task: str, mean: bool) -> torch.Tensor:
    """Per-run mean (or sum) over the rows of the per-sample losses: cross-entropy with integer
    labels, or the mean over output dims of the squared error (regression). ``out`` is
    (R, c, ...); the result is (R,), or a scalar for one run (its fused loss: fewer kernels)."""
    if task == "regression":
        rows = squared_errors(out, y)
        per_run = rows.mean(-1) if mean else rows.sum(-1)
        return per_run[0] if out.shape[0] == 1 else per_run
    if out.shape[0] == 1:
        return F.cross_entropy(out[0], y[0], reduction="mean" if mean else "sum")
    rows = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").reshape(y.shape)
    return rows.mean(-1) if mean else rows.sum(-1)


def hits(outs: list[torch.Tensor], ys: list[torch.Tensor]) -> np.ndarray:
    """Correct predictions per run and row, (R, rows), rows in the order of the parts given."""
    out, y = torch.cat(outs, dim=1), torch.cat(ys, dim=1)
    return (out.argmax(-1) == y).cpu().numpy().astype(np.float64)


def sq_norms(tensors: list[torch.Tensor], runs: int) -> torch.Tensor:
    """||t||^2 of each run (all leaves flattened), shape (R,)."""
    return sum(t.reshape(runs, -1).square().sum(1) for t in tensors)


def _parts(size: int, plan: EpochPlan) -> list[slice]:
    """The batch's rows as parts: whole, two halves of alternate rows (noise instruments),
    or consecutive micro-batches."""
    if plan.halves:
        return [slice(0, None, 2), slice(1, None, 2)]
    if plan.micro_batch is not None and plan.micro_batch < size:
        return [slice(i, i + plan.micro_batch) for i in range(0, size, plan.micro_batch)]
    return [slice(None)]


def _mean_state(states: list[tuple[int, list[torch.Tensor]]]) -> list[torch.Tensor]:
    """Row-weighted mean of the parts' new model states (integer leaves rounded), as the
    JAX engine combines parts."""
    rows = sum(r for r, _ in states)
    out = []
    for leaves in zip(*(s for _, s in states)):
        mean = sum(r * leaf.double() for (r, _), leaf in zip(states, leaves)) / rows
        out.append((mean.round() if not leaves[0].is_floating_point() else mean).to(leaves[0].dtype))
    return out


def train_step(group: Group, x: torch.Tensor, y: torch.Tensor, plan: EpochPlan, count: int) -> dict:
    """One update of every run of ``group`` on rows ``x`` (R, c, ...), ``y`` (R, c).

    Returns the step's outputs: per-run losses (times ``loss_scale``: the batch mean), the
    outputs and labels (for the score, counted at the epoch's end) and the requested per-step
    quantities, each (R,).
    """
    size = y.shape[1]
    mean = plan.reduction == "mean"
    parts = _parts(size, plan)
    if len(parts) == 1:
        out = group.forward(x, True)
        loss = batch_loss(out, y, plan.task, mean)
        grads = group.grads(loss if loss.dim() == 0 else loss.sum())
        record = {"loss": loss.detach(), "loss_scale": 1.0 if mean else 1.0 / size, "outs": [out.detach()], "ys": [y]}
        first = None
    else:
        grads, first, record = _parts_gradient(group, x, y, parts, plan.task)
        record["loss_scale"] = 1.0 / size
        if mean:
            grads = torch._foreach_mul(grads, 1.0 / size)

    delta = plan.optimizer.step(group.leaves, grads, group.opt_state, group.lr, group.momentum, count,
                                want_delta="update_norm" in plan.norms)
    sources = {"grad_norm": lambda: grads, "update_norm": lambda: delta, "weight_norm": lambda: group.leaves,
               "dist_init": lambda: torch._foreach_sub(group.leaves, group.init_leaves)}
    for name in plan.norms:
        record[name] = sq_norms(sources[name](), group.runs).sqrt()
    if first is not None:
        record.update(_two_batch(first, grads, 1.0 / size if mean else 1.0, size, group.runs))
    return record


def _parts_gradient(group: Group, x, y, parts: list[slice], task: str):
    """Gradient *sum* over the batch's rows computed part by part (each from the step's model
    state; the new state is their row-weighted mean), the first part's (gradient sum, rows),
    and the step's record."""
    start = group.get_state()
    grads, first, states, loss, outs, ys = None, None, [], 0.0, [], []
    for k, part in enumerate(parts):
        xp, yp = x[:, part], y[:, part]
        if yp.shape[1] == 0:  # a one-row batch has an empty second half
            continue
        if k:
            group.set_state(start)
        out = group.forward(xp, True)
        part_loss = batch_loss(out, yp, task, mean=False)
        g = group.grads(part_loss.sum())
        states.append((yp.shape[1], group.get_state()))
        loss = loss + part_loss.detach()
        outs.append(out.detach())
        ys.append(yp)
        if grads is None:
            grads, first = g, (g, yp.shape[1])
        else:
            grads = torch._foreach_add(grads, g)
    if start:
        group.set_state(_mean_state(states))
    return grads, first, {"loss": loss, "outs": outs, "ys": ys}


def _two_batch(first, grads, scale: float, size: int, runs: int) -> dict:
    """The two-batch estimates of |G|^2 and tr(Sigma) (``step_stats.two_batch_estimates``)
    from the first half's gradient sum and the batch's gradient; NaN-free placeholders when
    the batch has one row (the caller skips that step's EMA update)."""
    half_sum, n_small = first
    n_big = float(size)
    small_sq = sq_norms(half_sum, runs) / float(n_small) ** 2
    big_sq = sq_norms(grads, runs) / (scale * n_big) ** 2
    if n_big <= n_small:
        zero = torch.zeros(runs, device=small_sq.device)
        return {"noise_grad_sq_est": zero, "noise_trace_est": zero}
    grad_sq = (n_big * big_sq - n_small * small_sq) / (n_big - n_small)
    trace = (small_sq - big_sq) / (1.0 / n_small - 1.0 / n_big)
    return {"noise_grad_sq_est": grad_sq, "noise_trace_est": trace}


def train_epoch(group: Group, x: torch.Tensor, y: torch.Tensor, orders: torch.Tensor, plan: EpochPlan,
                count: int) -> dict[str, np.ndarray]:
    """Train ``group`` for one epoch in row order ``orders`` (R, N) from update number
    ``count``; returns per-step series (R, steps): ``mb_loss``, ``mb_score`` (accuracy, or for
    regression the mean squared error, as the JAX engine's step), the requested
    norms and the raw two-batch estimates."""
    records = []
    size = plan.batch_size
    for s in range(plan.steps):
        rows = orders[:, s * size:(s + 1) * size]
        records.append(train_step(group, x[rows], y[rows], plan, count + s))
    return _epoch_series(records, plan)


def _epoch_series(records: list[dict], plan: EpochPlan) -> dict[str, np.ndarray]:
    counts = plan.counts.astype(np.float64)
    steps = len(records)
    loss = torch.stack([r["loss"] for r in records]).reshape(steps, -1).double().cpu().numpy().T
    series = {"mb_loss": loss * np.array([r["loss_scale"] for r in records])}
    if plan.task == "regression":
        series["mb_score"] = series["mb_loss"]  # the batch's mean squared error
    else:
        correct = hits([o for r in records for o in r["outs"]], [t for r in records for t in r["ys"]])
        starts = np.concatenate([[0], np.cumsum(plan.counts)[:-1]])
        series["mb_score"] = np.add.reduceat(correct, starts, axis=1) / counts
    for name in records[0]:
        if name not in ("loss", "loss_scale", "outs", "ys"):
            series[name] = torch.stack([r[name] for r in records], 1).double().cpu().numpy()
    return series
