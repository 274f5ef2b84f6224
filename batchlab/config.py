"""A run's resolved configuration: frozen, typed, and hashed into the run's id.

A :class:`RunConfig` is *resolved*: every default is filled in, ``batch_size`` is an integer
(``"full"`` already turned into N) and schedules are counted in updates, so its hash
identifies the run's numbers. What users type is declared in ``settings.py`` and turned into
these configs by ``grid.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from batchlab.budget import updates_after

FULL = "full"
SHUFFLE_MODES = ("every-epoch", "once", "never")
REDUCTIONS = ("mean", "sum")
NORMS = ("none", "batch", "ghost")  # the built-in models' normalisation (models/norm.py)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "linear")
TASKS = ("classification", "regression")  # the losses: models/losses.py


def score_name(task: str) -> str:
    """The suffix of a task's recorded score: ``acc`` (accuracy) or ``r2`` (R^2 of a regression)."""
    return "r2" if task == "regression" else "acc"


def eval_names(task: str) -> tuple[str, str, str, str]:
    """Full-pass metrics in the engine's order: train loss, train score, test loss, test score."""
    s = score_name(task)
    return ("train_loss", f"train_{s}", "test_loss", f"test_{s}")


def monitorable(task: str) -> tuple[str, ...]:
    """Metrics early stopping can watch, for a model of ``task``."""
    return eval_names(task) + ("train_loss_running", f"train_{score_name(task)}_running")


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
    norm: str = "none"  # "batch" or "ghost" batch norm in the hidden layers (models/norm.py)
    ghost_size: int | None = None  # rows per ghost batch (norm "ghost")
    # A model given as code (not a built-in name) is known by a fingerprint of its parameter
    # shapes, initial values and outputs (``models.fingerprint``), never by its name alone.
    fingerprint: str | None = None


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer through optax (``engine/optim.py``; the torch backend mirrors it). ``lr``,
    ``momentum`` and ``weight_decay`` may differ between the runs of one compiled cohort."""

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9  # Adam, AdamW
    b2: float = 0.999
    eps: float = 1e-7  # Keras' Adam default (PyTorch uses 1e-8)
    warmup_steps: int = 0  # linear warmup of the learning rate over the first updates
    # Learning-rate decay, in updates: "step" multiplies lr by ``decay`` at each update count in
    # ``schedule_steps``; "cosine" follows a half cosine and "linear" a straight line from lr to
    # ``decay`` x lr over ``schedule_steps[0]`` updates, then stays there.
    schedule: str = "constant"
    schedule_steps: tuple[int, ...] = ()
    decay: float = 0.1
    # L2 added to the gradient for sgd and adam (PyTorch's ``weight_decay``); decoupled from the
    # gradient for adamw (optax's ``adamw``, ``torch.optim.AdamW``).
    weight_decay: float = 0.0
    clip_norm: float | None = None  # the gradient's global L2 norm is clipped to this before the update

    def program_kind(self) -> "OptimizerConfig":
        """What a compiled program of this optimizer depends on: not the learning rate, momentum
        or weight decay values (runs of one program carry their own), but whether there is
        momentum and weight decay at all (SGD without momentum keeps no momentum buffer, which
        halves a small-batch step's time here)."""
        return dataclasses.replace(self, lr=0.0, momentum=float(self.momentum != 0),
                                   weight_decay=float(self.weight_decay != 0))


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
    instruments: tuple[str, ...] = ()  # per-step instruments recorded with the run ("name" or "name@k")
    phases: tuple[Phase, ...] = ()  # changes of batch size / lr at given epochs, in order
    devices: int = 1  # each batch split over this many devices (data parallel); B / devices rows each

    def batch_size_at(self, epoch: int) -> int:
        """The batch size of epoch ``epoch`` (1-based): the last phase started before it."""
        size = self.batch_size
        for phase in self.phases:
            if phase.epoch < epoch and phase.batch_size is not None:
                size = phase.batch_size
        return size

    def lr_set_at(self, epoch: int) -> float | None:
        """The learning rate a phase sets at the start of epoch ``epoch`` (1-based), if any."""
        return next((p.lr for p in self.phases if p.epoch == epoch - 1 and p.lr is not None), None)

    def updates_after(self, n: int, epochs: int) -> int:
        """Updates made in the first ``epochs`` epochs on ``n`` training rows, phases included."""
        return updates_after(n, self.batch_size, self.phases, self.drop_last)(epochs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @functools.cached_property
    def run_id(self) -> str:
        """Hash of the resolved configuration (:func:`identity`): the run's identity in the
        store. (Computed once per config: it is asked for often, and the config is frozen.)"""
        text = json.dumps(identity(self), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cohort_key(self) -> tuple:
        """Runs with equal keys share one compiled program (they differ in lr, momentum, weight
        decay and seeds)."""
        return (self.data, self.model, self.optimizer.program_kind(), self.batch_size, self.epochs, self.reduction,
                self.drop_last, self.shuffle, self.early_stopping, self.micro_batch, self.instruments,
                self.phases, self.devices)


# The fields the first stores (batchlab 0.2.0) hashed into every id, whatever their value: they
# stay hashed so those ids stay. Every other field, i.e. every setting added since, is left out
# of the id while it has its default, so adding a setting never changes a stored run's id.
FIRST_FIELDS = frozenset(
    [f"data.{k}" for k in ("name", "standardize", "test_fraction", "split_seed", "label", "file_sha256")]
    + [f"model.{k}" for k in ("name", "hidden", "activation", "init", "dropout", "fingerprint")]
    + [f"optimizer.{k}" for k in ("name", "lr", "momentum", "nesterov", "b1", "b2", "eps", "warmup_steps",
                                  "schedule", "schedule_steps", "decay")]
    + [f"early_stopping.{k}" for k in ("monitor", "patience", "min_delta", "restore_best")]
    + [f"phases.{k}" for k in ("epoch", "batch_size", "lr")]
    + ["batch_size", "epochs", "seed", "init_seed", "data_seed", "dropout_seed", "reduction", "drop_last",
       "shuffle", "early_stopping", "micro_batch", "instruments", "phases"])


def identity(config: Any, prefix: str = "") -> Any:
    """What a run's id hashes: the config as plain values (dataclasses as dicts, tuples as
    lists), without the fields outside :data:`FIRST_FIELDS` that have their default."""
    if isinstance(config, (list, tuple)):
        return [identity(item, prefix) for item in config]
    if not dataclasses.is_dataclass(config):
        return config
    # A grid's runs share their data and model settings (the same objects): a grid of 100,000
    # runs spent 10 s recomputing them. Cached by object, not by equality: 1 == 1.0, yet they
    # serialize differently (configs are frozen; the result is only serialized, never changed).
    key = (id(config), prefix)
    cached = _IDENTITIES.get(key)
    if cached is not None and cached[0] is config:
        return cached[1]
    if len(_IDENTITIES) >= 256:
        _IDENTITIES.clear()
    out = {}
    for f in dataclasses.fields(config):
        path, value = f"{prefix}{f.name}", getattr(config, f.name)
        if path in FIRST_FIELDS or value != f.default:
            out[f.name] = identity(value, path + ".")
    _IDENTITIES[key] = (config, out)
    return out


_IDENTITIES: dict[tuple[int, str], tuple[Any, dict]] = {}


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


def run_config_from_dict(d: dict[str, Any], unknown: list[str] | None = None) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (used when reading the store); fields a config of
    an earlier version lacks take their defaults.

    A field this version does not know (a config written by a newer batchlab) raises ValueError
    naming it, unless ``unknown`` is a list: then such fields are left out of the config and
    their dotted names (``optimizer.new_knob``) appended to it."""
    names: list[str] = []

    def known(cls: type, values: dict[str, Any], prefix: str) -> dict[str, Any]:
        fields = {f.name for f in dataclasses.fields(cls)}
        names.extend(prefix + k for k in values if k not in fields)
        return {k: v for k, v in values.items() if k in fields}

    es = d.get("early_stopping")
    model = known(ModelConfig, d["model"], "model.")
    model["hidden"] = tuple(model.get("hidden", ()))
    optimizer = known(OptimizerConfig, d["optimizer"], "optimizer.")
    optimizer["schedule_steps"] = tuple(optimizer.get("schedule_steps", ()))
    data, stopping = known(DataConfig, d["data"], "data."), known(EarlyStopping, es, "early_stopping.") if es else None
    d = dict(known(RunConfig, d, ""), instruments=tuple(d.get("instruments", ())),
             phases=tuple(Phase(**known(Phase, p, "phases.")) for p in d.get("phases", ())))
    names = list(dict.fromkeys(names))
    if names and unknown is None:
        raise ValueError(f"settings this batchlab does not know: {', '.join(names)}")
    if unknown is not None:
        unknown.extend(names)
    return RunConfig(
        data=DataConfig(**data),
        model=ModelConfig(**model),
        optimizer=OptimizerConfig(**optimizer),
        early_stopping=EarlyStopping(**stopping) if stopping is not None else None,
        **{k: v for k, v in d.items() if k not in ("data", "model", "optimizer", "early_stopping")},
    )
