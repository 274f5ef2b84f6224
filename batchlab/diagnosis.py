"""What a run's learning curves say (Brownlee's reading; ``science.md`` 7b): under-fit, over-fit
(and the epoch it starts), unstable, diverged, or a good fit. One run may carry several labels
(over-fit and unstable). Every threshold is here, and each label comes with the numbers it rests on.

The test set is the validation set (batchlab's convention). With T = the last TAIL of the
evaluations (at least MIN_TAIL of them, epoch 0 excluded):

- **diverged**: the run's status is ``diverged``, its final training loss is not finite, or it
  ends above BLOWUP x its loss before training (worse than not training at all);
- **under-fit**: the final training loss is above HIGH x its start (it barely learned), or both
  losses still fall over T (least-squares trends of their logs, so one noisy epoch does not
  decide): the training loss by more than STILL_FALLING over T, and the test loss as well (more
  epochs would still help);
- **over-fit from epoch e**: the test loss reached its minimum at epoch e, at least AFTER
  evaluations before the end, ends above (1 + RISE) x that minimum, while the training loss kept
  falling after e (the model fits the training set at the test set's expense);
- **unstable**: over T, the epoch-to-epoch changes of the test accuracy have a standard
  deviation above JUMPY_ACC (2 points of accuracy); for a regression, those of the test loss
  above JUMPY_LOSS (10%) of its mean;
- **good fit**: none of the above.

Pure numpy on a run's per-epoch history (no engine, no pandas), so the store's summary, the runs
table, the figures and the report all show the same labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BLOWUP = 2.0  # final training loss above twice its start (the best-run rule's blow-up, analysis/selection.py)
HIGH = 0.5  # under-fit: final training loss above half its start
STILL_FALLING = 0.05  # under-fit: both losses still fall, the training loss by > 5% over the tail
RISE = 0.20  # over-fit: test loss ends > 20% above its minimum ...
AFTER = 3  # ... reached at least 3 evaluations before the end
JUMPY_ACC = 0.02  # unstable: sd of the tail's epoch-to-epoch test-accuracy changes > 2 points
JUMPY_LOSS = 0.10  # unstable (regression): sd of the tail's test-loss changes > 10% of its mean
TAIL = 0.25  # the tail: the last quarter of the evaluations ...
MIN_TAIL = 4  # ... and at least 4 of them


@dataclass(frozen=True)
class Diagnosis:
    labels: tuple[str, ...]  # "diverged", "under-fit", "over-fit", "unstable" or "good fit"
    numbers: dict[str, float] = field(default_factory=dict)  # what the labels rest on
    overfit_epoch: int | None = None  # where over-fitting starts (the test loss's minimum)

    def __str__(self) -> str:
        return "+".join(f"over-fit@{self.overfit_epoch}" if label == "over-fit" else label for label in self.labels)


def short(text: str) -> str:
    """A diagnosis's text as a table cell: ``over-fit@23+unstable`` -> ``over@23+unstable``."""
    return text.replace("over-fit", "over").replace("under-fit", "under").replace("good fit", "good")


def diagnose(history: dict, status: str = "finished") -> Diagnosis:
    """The labels of one run from its per-epoch ``history`` (``train_loss``, ``test_loss`` and,
    for a classification, ``test_acc``; epoch 0 first) and its status."""
    train = np.asarray(history.get("train_loss", []), float)
    test = np.asarray(history.get("test_loss", []), float)
    if status == "diverged" or len(train) == 0 or not math.isfinite(train[-1]) or \
            (len(train) > 1 and train[-1] > BLOWUP * train[0]):
        return Diagnosis(("diverged",), {"final_train_loss": float(train[-1]) if len(train) else math.nan})
    if len(train) < 1 + MIN_TAIL:  # too few evaluations to read a trend
        return Diagnosis(("good fit",), {"evaluations": float(len(train))})
    tail = max(MIN_TAIL, int(math.ceil(TAIL * (len(train) - 1))))
    numbers: dict[str, float] = {}
    labels = []
    if _under_fit(train, test, tail, numbers):
        labels.append("under-fit")
    onset = _over_fit(train, test, numbers)
    if onset is not None:
        labels.append("over-fit")
    if _unstable(history, test, tail, numbers):
        labels.append("unstable")
    return Diagnosis(tuple(labels) or ("good fit",), numbers, onset)


def _under_fit(train: np.ndarray, test: np.ndarray, tail: int, numbers: dict) -> bool:
    numbers["train_loss_vs_start"] = float(train[-1] / train[0]) if train[0] > 0 else math.nan
    numbers["train_loss_tail_drop"] = 1 - math.exp(_log_trend(train[-tail - 1:]))
    test_falls = len(test) == len(train) and _log_trend(test[-tail - 1:]) < 0
    still = numbers["train_loss_tail_drop"] > STILL_FALLING and test_falls
    return bool(numbers["train_loss_vs_start"] > HIGH or still)


def _log_trend(values: np.ndarray) -> float:
    """The change of log(values) over their span, from a least-squares line (0 if not positive)."""
    if len(values) < 2 or not (np.isfinite(values).all() and (values > 0).all()):
        return 0.0
    slope = np.polyfit(np.arange(len(values)), np.log(values), 1)[0]
    return float(slope * (len(values) - 1))


def _over_fit(train: np.ndarray, test: np.ndarray, numbers: dict) -> int | None:
    if len(test) != len(train) or not np.isfinite(test).all():
        return None
    best = int(np.argmin(test))
    numbers["test_loss_vs_min"] = float(test[-1] / test[best]) if test[best] > 0 else math.nan
    numbers["test_loss_min_epoch"] = float(best)
    if best <= len(test) - 1 - AFTER and numbers["test_loss_vs_min"] > 1 + RISE and train[-1] < train[best]:
        return best
    return None


def _unstable(history: dict, test: np.ndarray, tail: int, numbers: dict) -> bool:
    acc = np.asarray(history.get("test_acc", []), float)
    if len(acc) > tail:
        numbers["test_acc_jumps"] = float(np.std(np.diff(acc[-tail - 1:]), ddof=1))
        return numbers["test_acc_jumps"] > JUMPY_ACC
    if len(test) > tail and np.isfinite(test[-tail:]).all():
        numbers["test_loss_jumps"] = float(np.std(np.diff(test[-tail - 1:]), ddof=1) / np.mean(test[-tail:]))
        return numbers["test_loss_jumps"] > JUMPY_LOSS
    return False
