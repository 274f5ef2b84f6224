"""The torch backend's training step and epoch: where a batch becomes an update.

Read top to bottom, as ``engine/step.py``: the batch's rows -> loss and gradient (whole,
micro-batches, or two halves of alternate rows for instruments that need them) -> optimizer
update -> the instruments' measurements (``instruments/``, the same code as the JAX engine's,
on torch tensors through :class:`TorchOps`). Everything carries a leading run axis: R stacked
runs trained in one vmapped forward pass, or one run (R = 1) of an ordinary module (see
``torch_runs.py``).

Unlike the compiled JAX epoch, eager torch needs no fixed shapes: a partial last batch is
just its real rows (the mean is over them, as the JAX engine's masked mean). A run whose
batch loss is not finite keeps training to the epoch's end here; the caller restores its
state at the epoch's start, as the JAX engine does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from batchlab.engine.torch_ops import TorchOps
from batchlab.engine.torch_optim import RunHyper, TorchOptimizer
from batchlab.instruments.base import Step, StepInstrument, measure
from batchlab.models.adapters.torch_losses import batch_loss, hits


class Group(Protocol):
    """Runs trained together: tensors have a leading run axis of length ``runs``."""

    runs: int
    leaves: list[torch.Tensor]  # trained parameters, (R, ...) each, as aliases that do not require grad
    opt_state: list[list[torch.Tensor]]
    hyper: RunHyper
    measures: dict  # each instrument's state (tensors with a leading run axis)

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
    instruments: tuple[StepInstrument, ...]
    optimizer: TorchOptimizer

    @property
    def halves(self) -> bool:
        return any(ins.halves for ins in self.instruments)


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
    """One update of every run of ``group`` on rows ``x`` (R, c, ...), ``y`` (R, c): update
    number ``count`` (0-based). Returns the step's outputs: per-run losses (times
    ``loss_scale``: the batch mean), the outputs and labels (for the score, counted at the
    epoch's end) and the instruments' values, each (R,)."""
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

    before = [t.clone() for t in group.leaves] if plan.instruments else None
    plan.optimizer.step(group.leaves, grads, group.opt_state, group.hyper, count)
    if plan.instruments:
        ops = TorchOps(group.runs)
        halves = None
        if first is not None:
            half_sum, n_small = first
            big = grads if mean else torch._foreach_mul(grads, 1.0 / size)
            halves = ((torch._foreach_mul(half_sum, 1.0 / n_small), n_small), (big, size))
        group.measures, values = measure(plan.instruments, group.measures,
                                         Step(grads, before, group.leaves, ops, halves), count + 1)
        record.update(values)
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


def train_epoch(group: Group, x: torch.Tensor, y: torch.Tensor, orders: torch.Tensor, plan: EpochPlan,
                count: int) -> dict[str, np.ndarray]:
    """Train ``group`` for one epoch in row order ``orders`` (R, N) from update number
    ``count``; returns per-step series (R, steps): ``mb_loss``, ``mb_score`` (accuracy, or for
    regression the mean squared error, as the JAX engine's step) and the instruments' values."""
    records = []
    size = plan.batch_size
    for s in range(plan.steps):
        rows = orders[:, s * size:(s + 1) * size]
        records.append(train_step(group, x[rows], y[rows], plan, count + s))
    return _epoch_series(records, plan)


def _epoch_series(records: list[dict[str, Any]], plan: EpochPlan) -> dict[str, np.ndarray]:
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
