"""A sweep: batch size x learning rate x seeds under one budget, expanded into resolved runs.

Budgets: ``epochs=30`` (every B trains 30 epochs), ``steps=20000`` (each B trains the epochs
that hold at least 20,000 updates), ``samples=1e6`` (the epochs that hold at least 10^6
samples). Learning rates: a list tried at every B (re-tuned per B in the analysis, the fair
comparison of Shallue et al.), or one lr per B from a scaling rule: ``linear``
(lr = base_lr B / base_batch; Goyal et al.) or ``sqrt`` (lr = base_lr sqrt(B / base_batch);
Hoffer et al.), optionally with a linear warmup over the first epochs.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchlab import budget
from batchlab.api import build_configs
from batchlab.config import DataConfig, ModelConfig, RunConfig, parse_batch_sizes, parse_floats, resolve_batch_size
from batchlab.errors import BatchlabError

BUDGET_KINDS = ("epochs", "steps", "samples")
SCALING_RULES = ("linear", "sqrt")


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains; every field has a CLI option and a key in a TOML file."""

    name: str = "sweep"
    data: str = "digits"
    model: str = "mlp"
    hidden: tuple[int, ...] = (50,)
    batch_sizes: str = "1:1024,full"
    lr: str = "0.01"
    momentum: float = 0.0
    seeds: int = 3
    budget: str = "epochs=30"
    target: str = "test_acc>=0.95"
    lr_scaling: str | None = None
    base_lr: float = 0.01
    base_batch: int = 32
    warmup_epochs: float = 0.0
    optimizer: str = "sgd"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_spec(path: str | Path, **overrides: Any) -> SweepSpec:
    """A SweepSpec from a TOML file (keys as the option names); ``overrides`` win.

    ``epochs = N`` is the CLI's ``--epochs``: shorthand for ``budget = "epochs=N"``. A model
    given as ``file.py:function`` is read relative to the config file's folder.
    """
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise BatchlabError(f"sweep config {path} does not exist") from None
    except IsADirectoryError:
        raise BatchlabError(f"sweep config {path} is a folder, not a TOML file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BatchlabError(f"sweep config {path} is not readable TOML ({_one_line(exc)})") from None
    known = {f.name for f in dataclasses.fields(SweepSpec)} | {"epochs"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BatchlabError(f"sweep config {path}: unknown key(s) {unknown}; known: {sorted(known)}")
    if "epochs" in values:
        if "budget" in values:
            raise BatchlabError(f"sweep config {path}: give epochs or budget, not both")
        values["budget"] = f"epochs={values.pop('epochs')}"
    for key, value in values.items():
        values[key] = _setting(path, key, value)
    if "model" in values:  # a model file named in the config is found beside the config
        from batchlab.models.imported import relative_to

        values["model"] = relative_to(values["model"], path.parent)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SweepSpec(**values)


_TYPES = {f.name: f.type for f in dataclasses.fields(SweepSpec)}


def _setting(path: Path, key: str, value: Any) -> Any:
    """A TOML value in the form SweepSpec holds: lists of B / lr joined with commas, widths as a
    tuple of integers, numbers as numbers; anything else is a one-line error naming the key."""
    if key in ("batch_sizes", "lr") and isinstance(value, (list, int, float)) and not isinstance(value, bool):
        value = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if key == "hidden":
        from batchlab.config import parse_widths

        return parse_widths(value if isinstance(value, (list, tuple, str)) else str(value))
    kind = _TYPES[key]
    ok = {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "str | None": isinstance(value, str)}.get(kind, True)
    if not ok:
        raise BatchlabError(f"sweep config {path}: {key} must be {kind.replace(' | None', '')}, got {value!r}")
    return float(value) if kind == "float" else value


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def parse_budget(spec: str) -> tuple[str, float]:
    kind, _, value = spec.partition("=")
    kind = kind.strip()
    if kind not in BUDGET_KINDS or not value:
        raise BatchlabError(f"budget must be epochs=N, steps=N or samples=N, got {spec!r}")
    amount = parse_floats(value, f"{kind} budget", positive=True)[0]
    return kind, amount


def epochs_for(kind: str, amount: float, n: int, batch_size: int) -> int:
    """Epochs that hold the budget at this batch size (rounded up to whole epochs)."""
    if kind == "epochs":
        if amount != int(amount):
            raise BatchlabError(f"an epochs budget must be a whole number, got {amount:g}")
        return int(amount)
    per_epoch = budget.steps_per_epoch(n, batch_size) if kind == "steps" else n
    return max(1, math.ceil(amount / per_epoch))


def expand(spec: SweepSpec, data_cfg: DataConfig, model_cfg: ModelConfig, n_train: int) -> list[RunConfig]:
    """All runs of the sweep, resolved and validated (B above N is named in the error)."""
    sizes = [resolve_batch_size(b, n_train) for b in parse_batch_sizes(spec.batch_sizes)]
    sizes = list(dict.fromkeys(sizes))
    kind, amount = parse_budget(spec.budget)
    if spec.lr_scaling is not None and spec.lr_scaling not in SCALING_RULES:
        raise BatchlabError(f"unknown lr scaling {spec.lr_scaling!r}: choose linear or sqrt")
    configs: list[RunConfig] = []
    for b in sizes:
        epochs = epochs_for(kind, amount, n_train, b)
        lrs = ([budget.scaled_lr(spec.lr_scaling, spec.base_lr, spec.base_batch, b)] if spec.lr_scaling
               else spec.lr)
        configs += build_configs(data_cfg, n_train, model_cfg, batch_size=b, epochs=epochs, lr=lrs,
                                 momentum=spec.momentum, seeds=spec.seeds, optimizer=spec.optimizer,
                                 warmup_epochs=spec.warmup_epochs)
    if not configs:
        raise BatchlabError("the sweep grid is empty")
    return configs


__all__ = ["SweepSpec", "read_spec", "expand", "parse_budget", "epochs_for"]
