"""Frozen, typed run settings and the parsing of list specs such as ``"1,32,full"`` and ``"1:1024"``.

A :class:`RunConfig` is *resolved*: every default is filled in and ``batch_size`` is an
integer (``"full"`` already turned into N), so its hash identifies the run's numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchlab.errors import BatchlabError

FULL = "full"
SHUFFLE_MODES = ("every-epoch", "once", "never")
REDUCTIONS = ("mean", "sum")
OPTIMIZERS = ("sgd", "adam")
TASKS = ("classification", "regression")  # the losses: engine/losses.py


def score_name(task: str) -> str:
    """The suffix of a task's recorded score: ``acc`` (accuracy) or ``r2`` (R^2 of a regression)."""
    return "r2" if task == "regression" else "acc"


def eval_names(task: str) -> tuple[str, str, str, str]:
    """Full-pass metrics in the engine's order: train loss, train score, test loss, test score."""
    s = score_name(task)
    return ("train_loss", f"train_{s}", "test_loss", f"test_{s}")


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is prepared. ``name`` is a built-in name or a file path."""

    name: str
    standardize: bool = False
    test_fraction: float = 0.2  # used only when the data has no test split of its own
    split_seed: int = 0
    label: str = "label"  # label column of a CSV file
    file_sha256: str | None = None  # content hash of a user file, so edited data is a new run
    # "classification" (integer labels) or "regression" (float targets, mean squared error).
    task: str = "classification"


@dataclass(frozen=True)
class ModelConfig:
    """A built-in model and its options (ignored options keep their defaults)."""

    name: str = "mlp"
    hidden: tuple[int, ...] = (50,)
    activation: str = "relu"
    init: str = "he_uniform"  # hidden-layer init; the output layer is glorot_uniform (Keras default)
    dropout: float = 0.0
    # A model given as code (not a built-in name) is known by a fingerprint of its parameter
    # shapes, initial values and outputs (``models.fingerprint``), never by its name alone.
    fingerprint: str | None = None


SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer through optax; ``lr`` and ``momentum`` may differ between runs of one cohort."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9  # Adam
    b2: float = 0.999
    eps: float = 1e-7  # Keras' Adam default (PyTorch uses 1e-8)
    warmup_steps: int = 0  # linear warmup of the learning rate over the first updates
    # Learning-rate decay, in updates: "step" multiplies lr by ``decay`` at each update count in
    # ``schedule_steps``; "cosine" follows a half cosine from lr to ``decay`` x lr over
    # ``schedule_steps[0]`` updates, then stays there.
    schedule: str = "constant"
    schedule_steps: tuple[int, ...] = ()
    decay: float = 0.1

    def program_kind(self) -> "OptimizerConfig":
        """What a compiled program of this optimizer depends on: not the learning rate or
        momentum values (runs of one program carry their own), but whether there is momentum
        (SGD without it keeps no momentum buffer, which halves a small-batch step's time here)."""
        return dataclasses.replace(self, lr=0.0, momentum=float(self.momentum != 0))


@dataclass(frozen=True)
class Phase:
    """From epoch ``epoch`` on (after ``epoch`` epochs are done), train with this batch size
    and/or learning rate; parameters and optimizer state carry over the switch."""

    epoch: int
    batch_size: int | None = None
    lr: float | None = None


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    monitor: str = "test_loss"
    patience: int = 10
    min_delta: float = 0.0
    restore_best: bool = True

    @property
    def mode(self) -> str:
        return "max" if self.monitor.endswith(("acc", "r2")) else "min"


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run's numbers."""

    data: DataConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    batch_size: int
    epochs: int
    seed: int = 0
    init_seed: int = 0
    data_seed: int = 0
    dropout_seed: int = 0
    reduction: str = "mean"
    drop_last: bool = False
    shuffle: str = "every-epoch"
    early_stopping: EarlyStopping | None = None
    micro_batch: int | None = None  # largest forward pass; bigger batches accumulate gradients
    instruments: tuple[str, ...] = ()  # per-step instruments recorded with the run
    phases: tuple[Phase, ...] = ()  # changes of batch size / lr at given epochs, in order

    def batch_size_at(self, epoch: int) -> int:
        """The batch size of epoch ``epoch`` (1-based): the last phase started before it."""
        size = self.batch_size
        for phase in self.phases:
            if phase.epoch < epoch and phase.batch_size is not None:
                size = phase.batch_size
        return size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @functools.cached_property
    def run_id(self) -> str:
        """Hash of the resolved configuration: the run's identity in the store. A setting
        added later is left out while it has its default, so earlier runs keep their ids.
        (Computed once per config: it is asked for often, and the config is frozen.)"""
        identity = self.to_dict()
        if identity["data"]["task"] == "classification":
            del identity["data"]["task"]
        text = json.dumps(identity, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cohort_key(self) -> tuple:
        """Runs with equal keys share one compiled program (they differ in lr, momentum, seeds)."""
        return (self.data, self.model, self.optimizer.program_kind(), self.batch_size, self.epochs, self.reduction,
                self.drop_last, self.shuffle, self.early_stopping, self.micro_batch, self.instruments,
                self.phases)


SEED_SETTINGS = ("seed", "init_seed", "data_seed", "dropout_seed")
# Short column names for the settings people read most; the rest keep their dotted path.
_SHORT = {"data.name": "data", "model.name": "model", "optimizer.name": "optimizer", "optimizer.lr": "lr",
          "optimizer.momentum": "momentum"}


def flat_settings(cfg: RunConfig) -> dict[str, Any]:
    """Every field of the resolved config as one flat, hashable column each (``model.hidden``,
    ``optimizer.nesterov``, ...; tuples and nested values as text).

    Runs that agree on every column except the seeds are seeds of one setting; nothing that
    changes a run's numbers is left out, so such runs are never averaged as if they were seeds.
    """
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, (list, tuple)):
            flat[prefix] = json.dumps(value, default=list) if value and isinstance(value[0], dict) \
                else ",".join(str(v) for v in value)
        else:
            flat[prefix] = value

    visit("", cfg.to_dict())
    return {_SHORT.get(k, k): v for k, v in flat.items()}


def setting_names() -> tuple[str, ...]:
    """The columns :func:`flat_settings` produces, seeds excluded (the grouping columns)."""
    probe = RunConfig(DataConfig("x"), ModelConfig(), OptimizerConfig(), batch_size=1, epochs=1,
                      early_stopping=EarlyStopping())
    return tuple(k for k in flat_settings(probe) if k not in SEED_SETTINGS) + ("early_stopping",)


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (used when reading the store)."""
    es = d.get("early_stopping")
    model = dict(d["model"])
    model["hidden"] = tuple(model.get("hidden", ()))
    optimizer = dict(d["optimizer"])
    optimizer["schedule_steps"] = tuple(optimizer.get("schedule_steps", ()))
    d = dict(d, instruments=tuple(d.get("instruments", ())),
             phases=tuple(Phase(**p) for p in d.get("phases", ())))
    return RunConfig(
        data=DataConfig(**d["data"]),
        model=ModelConfig(**model),
        optimizer=OptimizerConfig(**optimizer),
        early_stopping=EarlyStopping(**es) if es else None,
        **{k: v for k, v in d.items() if k not in ("data", "model", "optimizer", "early_stopping")},
    )


# ---------------------------------------------------------------- parsing of list specs

SEED_LIMIT = 2 ** 63  # seeds are 64-bit (JAX's PRNGKey and NumPy take any value in [0, 2**63))
MAX_SEEDS = 10_000  # a seed count above this is a typo, not an experiment (it would build the list first)


def _parse_int(text: str, what: str) -> int:
    """An integer from ``"12"``, ``"1e3"`` or ``"12.0"``; exact for integers of any size."""
    text = str(text).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise BatchlabError(f"{what} must be an integer, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise BatchlabError(f"{what} must be an integer, got {text!r}")
    return int(value)


def check_seed(value: int, what: str = "seed") -> int:
    """A seed must be an integer in [0, 2**63): what the random generators accept."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise BatchlabError(f"{what} must be an integer in [0, 2**63), got {value!r}")
    return value


def parse_batch_sizes(spec: str | int | list) -> list[int | str]:
    """``"1,32,full"`` -> [1, 32, 'full']; ``"1:1024"`` -> powers of two 1..1024; ints pass through.

    Values are checked against N later (:func:`resolve_batch_size`); here only their form.
    """
    if isinstance(spec, (list, tuple)):
        items: list[Any] = list(spec)
    elif isinstance(spec, int) and not isinstance(spec, bool):
        items = [spec]
    else:
        items = [p.strip() for p in str(spec).split(",")]
    out: list[int | str] = []
    for item in items:
        if isinstance(item, str) and item.lower() == FULL:
            out.append(FULL)
        elif isinstance(item, str) and ":" in item:
            lo_text, hi_text = item.split(":", 1)
            lo, hi = _parse_int(lo_text, "batch size"), _parse_int(hi_text, "batch size")
            if lo < 1 or hi < lo:
                raise BatchlabError(f"batch-size range {item!r} must be a:b with 1 <= a <= b")
            b = lo
            while b <= hi:
                out.append(b)
                b *= 2
        elif isinstance(item, str):
            if not item:
                raise BatchlabError(f"empty entry in batch sizes {spec!r}")
            out.append(_parse_int(item, "batch size"))
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        else:
            raise BatchlabError(f"batch size must be an integer or 'full', got {item!r}")
    for b in out:
        if b != FULL and b < 1:
            raise BatchlabError(f"batch size must be >= 1, got {b}")
    if not out:
        raise BatchlabError("no batch size given")
    return out


def resolve_batch_size(b: int | str, n: int) -> int:
    """'full' -> N; an integer must lie in [1, N] (an error names it otherwise)."""
    from batchlab.budget import check_batch_size

    return n if b == FULL else check_batch_size(b, n)


def parse_floats(spec: str | float | list, what: str, *, positive: bool = False,
                 low: float | None = None, high: float | None = None) -> list[float]:
    """``"0.001,0.01"`` -> [0.001, 0.01], each finite and (if asked) > 0 or within [low, high)."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise BatchlabError(f"{what} must be a number, got {item!r}") from None
        if not math.isfinite(value):
            raise BatchlabError(f"{what} must be finite, got {item!r}")
        if positive and value <= 0:
            raise BatchlabError(f"{what} must be > 0, got {item!r}")
        if low is not None and value < low or high is not None and value >= high:
            raise BatchlabError(f"{what} must lie in [{low}, {high}), got {item!r}")
        out.append(value)
    if not out:
        raise BatchlabError(f"no {what} given")
    return out


def parse_seeds(spec: str | int | list) -> list[int]:
    """``5`` -> seeds 0..4; ``"3,7"`` -> [3, 7]; each seed in [0, 2**63), at most 10,000 of them."""
    if isinstance(spec, (list, tuple)):
        seeds = [_parse_int(str(s), "seed") for s in spec]
    elif "," in str(spec):
        seeds = [_parse_int(p, "seed") for p in str(spec).split(",")]
    else:
        count = _parse_int(str(spec), "number of seeds")
        if not 1 <= count <= MAX_SEEDS:
            raise BatchlabError(f"number of seeds must lie in [1, {MAX_SEEDS:,}], got {count}")
        return list(range(count))
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise BatchlabError(f"give 1 to {MAX_SEEDS:,} seeds, got {len(seeds)}")
    return [check_seed(s) for s in seeds]


def parse_ints(spec: str | int | list, what: str, low: int = 0) -> list[int]:
    """``"2,30"`` -> [2, 30]; each an integer >= ``low``."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    values = [_parse_int(str(item).strip(), what) for item in items]
    if not values or any(v < low for v in values):
        raise BatchlabError(f"{what} must be integers >= {low}, got {spec!r}")
    return values


def parse_widths(spec: str | int | list | tuple) -> tuple[int, ...]:
    """``"256,256"`` -> (256, 256); ``""`` -> () (no hidden layer)."""
    if isinstance(spec, (list, tuple)):
        widths = tuple(_parse_int(str(w), "hidden width") for w in spec)
    else:
        text = str(spec).strip()
        widths = tuple(_parse_int(p.strip(), "hidden width") for p in text.split(",") if p.strip())
    if any(w < 1 for w in widths):
        raise BatchlabError(f"hidden widths must be >= 1, got {spec!r}")
    return widths


# ---------------------------------------------------------------- output paths

def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it, before any work
    whose results would go there; a one-line BatchlabError names the folder otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BatchlabError(f"cannot write the {what} {path}: it is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".batchlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BatchlabError(f"cannot write the {what} {path} ({exc.strerror or exc})") from None
    return path
