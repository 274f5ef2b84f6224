"""A training target such as ``test_acc>=0.95``: parsed and checked before anything trains
(without pandas, which the analyses that use it import)."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

import numpy as np

from batchlab.errors import BatchlabError

TARGET_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "train_loss_running", "train_acc_running")
_OPS = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """``metric >= value`` (accuracies) or ``metric <= value`` (losses)."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def reached(self, values: np.ndarray) -> np.ndarray:
        return _OPS[self.op](values, self.value)


def parse_target(spec: str) -> Target:
    """``"test_acc>=0.95"`` -> Target('test_acc', '>=', 0.95); anything else is a BatchlabError."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*", spec or "")
    if not match:
        raise BatchlabError(f"target must look like test_acc>=0.95 or test_loss<=0.1, got {spec!r}")
    metric, op = match.group(1), match.group(2)
    try:
        value = float(match.group(3))
    except ValueError:
        raise BatchlabError(f"target value must be a number, got {match.group(3)!r}") from None
    if metric not in TARGET_METRICS:
        raise BatchlabError(f"unknown metric {metric!r} in target: choose one of {', '.join(TARGET_METRICS)}")
    if not math.isfinite(value):
        raise BatchlabError(f"target value must be finite, got {match.group(3)!r}")
    low, high = (0.0, 1.0) if "acc" in metric else (0.0, math.inf)  # an accuracy, or a loss
    if (op == ">=" and value > high) or (op == "<=" and value < low):
        raise BatchlabError(f"no run can reach {metric}{op}{value:g}: {metric} lies in [{low:g}, {high:g}]")
    return Target(metric, op, value)
