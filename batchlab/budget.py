"""Epochs <-> steps <-> samples: the bookkeeping every record and every plan uses.

Conventions (``design.md``): N training samples, batch size B with 1 <= B <= N.
An epoch is one pass over the training set made of disjoint batches. When B does not
divide N the last batch is smaller: it is kept by default (Keras, ``ceil(N/B)`` steps)
or dropped (MATLAB, ``floor(N/B)`` steps, the leftover samples are skipped that epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from batchlab.errors import BatchlabError


def check_batch_size(batch_size: int, n: int) -> int:
    """Return ``batch_size`` if 1 <= B <= N, else raise a one-line error (never clamp)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise BatchlabError(f"batch size must be an integer or 'full', got {batch_size!r}")
    if not 1 <= batch_size <= n:
        raise BatchlabError(f"batch size {batch_size} is outside [1, N={n}] (N = training samples)")
    return batch_size


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer updates in one epoch: ceil(N/B) when the partial batch is kept, floor(N/B) when dropped."""
    check_batch_size(batch_size, n)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def updates_after(n: int, batch_size: int, phases: Sequence[Any] = (), drop_last: bool = False
                  ) -> Callable[[int], int]:
    """Updates done after ``e`` epochs of a run that starts at ``batch_size`` and switches at
    ``phases`` (each with ``.epoch``, after which it starts, and ``.batch_size``, None to keep it).

    Counted per phase (epochs x updates per epoch), so a huge ``e`` costs no loop over epochs.
    """
    starts = [0] + [p.epoch for p in phases]  # phase k covers epochs starts[k]+1 .. starts[k+1]
    sizes = [batch_size]
    for phase in phases:
        sizes.append(phase.batch_size if phase.batch_size is not None else sizes[-1])

    def updates(e: int) -> int:
        total = 0
        for k, size in enumerate(sizes):
            end = min(e, starts[k + 1]) if k + 1 < len(starts) else e
            if end > starts[k]:
                total += (end - starts[k]) * steps_per_epoch(n, size, drop_last)
        return total

    return updates


def samples_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Training samples that update the parameters in one epoch."""
    return steps_per_epoch(n, batch_size, drop_last) * batch_size if drop_last else n


def regime(n: int, batch_size: int) -> str:
    """Name of the gradient-descent variant that B selects."""
    if batch_size == n:
        return "batch gradient descent"
    if batch_size == 1:
        return "stochastic gradient descent"
    return "mini-batch gradient descent"


@dataclass(frozen=True)
class Plan:
    """How an (N, B, epochs) choice turns into updates and samples."""

    n: int
    batch_size: int
    epochs: int
    drop_last: bool
    steps_per_epoch: int
    last_batch_size: int
    total_steps: int
    samples_seen: int
    regime: str

    def describe(self) -> str:
        last = ""
        if self.last_batch_size != self.batch_size:
            last = (
                f" (last batch {self.last_batch_size} samples)"
                if not self.drop_last
                else f" ({self.n - self.samples_seen // self.epochs} leftover samples dropped per epoch)"
            )
        return (
            f"{self.regime}: {self.steps_per_epoch:,} batches (updates) per epoch{last}, "
            f"{self.total_steps:,} updates, {self.samples_seen:,} samples seen"
        )


def plan(n: int, batch_size: int, epochs: int, drop_last: bool = False) -> Plan:
    """Bookkeeping of a training budget, e.g. N=200, B=5, 1000 epochs -> 40/epoch, 40,000 updates."""
    check_batch_size(batch_size, n)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise BatchlabError(f"epochs must be an integer >= 1, got {epochs!r}")
    steps = steps_per_epoch(n, batch_size, drop_last)
    remainder = n % batch_size
    last = batch_size if (remainder == 0 or drop_last) else remainder
    return Plan(
        n=n,
        batch_size=batch_size,
        epochs=epochs,
        drop_last=drop_last,
        steps_per_epoch=steps,
        last_batch_size=last,
        total_steps=steps * epochs,
        samples_seen=samples_per_epoch(n, batch_size, drop_last) * epochs,
        regime=regime(n, batch_size),
    )


def scaled_lr(rule: str, base_lr: float, base_batch: int, batch_size: int) -> float:
    """The learning rate at ``batch_size`` from ``base_lr`` at ``base_batch``: lr x B/B_0
    (``linear``, Goyal et al. 2017) or lr x sqrt(B/B_0) (``sqrt``, Hoffer et al. 2017)."""
    ratio = batch_size / base_batch
    return base_lr * (ratio if rule == "linear" else math.sqrt(ratio))


def memory_limit() -> int:
    """What batchlab lets a command's arrays take: half the machine's physical memory
    (``os.sysconf``), or 8 GiB where that is unknown."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2 ** 30
