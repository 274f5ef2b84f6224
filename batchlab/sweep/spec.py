"""A sweep: any training setting, several batch sizes and learning rates under one budget.

Budgets: ``epochs=30`` (every B trains 30 epochs), ``steps=20000`` (each B trains the epochs
that hold at least 20,000 updates), ``samples=1e6`` (the epochs that hold at least 10^6
samples). Learning rates: a list tried at every B (re-tuned per B in the analysis, the fair
comparison of Shallue et al.), or one lr per B from a scaling rule: ``linear``
(lr = base_lr B / base_batch; Goyal et al.) or ``sqrt`` (lr = base_lr sqrt(B / base_batch);
Hoffer et al.), optionally with a linear warmup over the first epochs.

A sweep's settings are those of ``settings.py`` (the training settings, with a sweep's own
defaults, and the sweep's settings), given as keywords, command-line options or the keys of
a TOML config file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from batchlab import budget
from batchlab.config import DataConfig, ModelConfig, Phase, RunConfig
from batchlab.errors import BatchlabError
from batchlab.grid import check_memory, epochs_for, runs_of
from batchlab.parsing import parse_budget
from batchlab.settings import ALIASES, BY_NAME, SWEEP, read_settings, training_defaults


class SweepSpec:
    """What a sweep trains: settings by name (read and checked at once); ``epochs=N`` is
    ``budget="epochs=N"``. Settings not given have the sweep's defaults."""

    def __init__(self, **given: Any):
        values = read_settings(given)
        if "epochs" in values:
            if "budget" in values:
                raise BatchlabError("give epochs or budget, not both")
            values["budget"] = f"epochs={values.pop('epochs')}"
        defaults = {**training_defaults(sweep=True), **{s.name: s.read(s.default) for s in SWEEP}}
        defaults.pop("epochs")
        self._values = {**defaults, **values}
        self._named = self._values["name"] is not None
        if not self._named:
            self._values["name"] = default_name(self.to_dict())

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def values(self) -> dict[str, Any]:
        """Every setting's value (training settings without ``epochs``, which the budget sets)."""
        return dict(self._values)

    def replace(self, **given: Any) -> "SweepSpec":
        """This sweep with ``given`` settings changed (``None``: not given)."""
        return SweepSpec(**{**self._given(), **{ALIASES.get(k, k): v for k, v in given.items() if v is not None}})

    def _given(self) -> dict[str, Any]:
        return {k: (list(map(_plain, v)) if k == "phases" else v) for k, v in self._values.items()
                if k != "name" or self._named}

    def to_dict(self) -> dict[str, Any]:
        """The sweep's settings as plain values, as the store keeps them."""
        return {k: _plain(v) for k, v in self._values.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SweepSpec) and self._values == other._values

    def __repr__(self) -> str:
        return f"SweepSpec({self.name!r})"


def default_name(settings: dict[str, Any]) -> str:
    """``sweep-`` and 8 hex digits of the settings (without the name): the same settings give
    the same sweep, which a second command resumes; other settings give another."""
    text = json.dumps({k: v for k, v in settings.items() if k != "name"}, sort_keys=True, default=str)
    return "sweep-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def _plain(value: Any) -> Any:
    if isinstance(value, Phase):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_spec(path: str | Path, **overrides: Any) -> SweepSpec:
    """A SweepSpec from a TOML file (keys as the settings' names); ``overrides`` win.

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
        raise BatchlabError(f"sweep config {path} is not readable TOML ({' '.join(str(exc).split())})") from None
    unknown = sorted(k for k in values if k not in BY_NAME and k not in ALIASES)
    if unknown:
        raise BatchlabError(f"sweep config {path}: unknown key(s) {unknown}; known: {sorted(BY_NAME)}")
    if isinstance(values.get("model"), str):  # a model file named in the config is found beside the config
        from batchlab.models.imported import relative_to

        values["model"] = relative_to(values["model"], path.parent)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        read_settings(values)
    except BatchlabError as exc:
        raise BatchlabError(f"sweep config {path}: {exc}") from None
    if "epochs" in given and "budget" in values:
        values.pop("budget")
    if "budget" in given and "epochs" in values:
        values.pop("epochs")
    return SweepSpec(**{**{ALIASES.get(k, k): v for k, v in values.items()}, **given})


def expand(spec: SweepSpec, data_cfg: DataConfig, model_cfg: ModelConfig, n_train: int) -> list[RunConfig]:
    """All runs of the sweep, resolved and validated (B above N is named in the error)."""
    from batchlab.parsing import resolve_batch_size

    values = spec.values()
    kind, amount = parse_budget(values["budget"])
    configs: list[RunConfig] = []
    for b in dict.fromkeys(resolve_batch_size(b, n_train) for b in values["batch_size"]):
        lrs = ([budget.scaled_lr(values["lr_scaling"], values["base_lr"], values["base_batch"], b)]
               if values["lr_scaling"] else values["lr"])
        configs += runs_of({**values, "batch_size": [b], "epochs": epochs_for(kind, amount, n_train, b),
                                  "lr": lrs}, data_cfg, n_train, model_cfg)
    if not configs:
        raise BatchlabError("the sweep grid is empty")
    check_memory(configs, n_train)  # each batch size's runs were checked alone: now all of them
    return configs


__all__ = ["SweepSpec", "read_spec", "expand"]
