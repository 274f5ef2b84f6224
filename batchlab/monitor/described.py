"""A monitored run as the store sees it: the user's settings -> a :class:`RunConfig` plus the
:class:`~batchlab.results.Monitored` record that keeps all of them.

A monitored run was trained by the user's loop, so batchlab cannot reproduce it; its config
only *describes* it, so that ``batchlab runs``, ``export`` and ``report`` can show and group
it beside batchlab's own runs. Settings batchlab has a field for fill that field (``batch_size``,
``lr``, ``momentum``, ``weight_decay``, ``optimizer``, ``epochs``, ``data``, ``model``, ``seed``);
a setting not given is NaN or a word that says so ("own data"), never a default that would
pass for a value. Every setting, known or free (``warmup=100``), stays in the record as given.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import uuid
from typing import Any

from batchlab.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig
from batchlab.errors import BatchlabError
from batchlab.results import Monitored

UNKNOWN_DATA, UNKNOWN_MODEL, UNKNOWN_OPTIMIZER = "own data", "own model", "unknown"


def new_run_id(name: str) -> str:
    """A fresh id for one monitor (16 hex digits, as batchlab's run ids): the same loop run twice
    is two runs, as in any experiment tracker."""
    text = f"monitored|{name}|{time.time_ns()}|{os.getpid()}|{uuid.uuid4().hex}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plain_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as JSON values: numbers, text, booleans and None as they are; an optimizer
    object becomes its class name (lower case) and its first group's lr, momentum and weight
    decay unless given; anything else its ``str``."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if not isinstance(key, str) or not key:
            raise BatchlabError(f"monitor setting names must be non-empty text, not {key!r}")
        groups = getattr(value, "param_groups", None)
        if key == "optimizer" and isinstance(groups, list) and groups:
            out[key] = type(value).__name__.lower()
            for name in ("lr", "momentum", "weight_decay"):
                if name not in settings and isinstance(groups[0].get(name), (int, float)):
                    out[name] = float(groups[0][name])
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def _number(settings: dict[str, Any], key: str) -> float:
    value = settings.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BatchlabError(f"monitor setting {key}={value!r} must be a number")
    return float(value)


def _whole(settings: dict[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BatchlabError(f"monitor setting {key}={value!r} must be a whole number >= 0")
    return value


def describe(run_id: str, name: str, settings: dict[str, Any], batch_size: int, outputs: tuple[str, ...],
             model_name: str) -> tuple[RunConfig, Monitored]:
    """The config that describes a monitored run and its record. ``settings`` are plain
    (:func:`plain_settings`); ``batch_size`` is the one its updates used (the setting, when
    given, must agree: the caller checks); ``outputs`` are the instruments' outputs recorded."""
    config = RunConfig(
        data=DataConfig(str(settings.get("data", UNKNOWN_DATA))),
        model=ModelConfig(str(settings.get("model", model_name)), hidden=(), activation="", init="", dropout=0.0),
        optimizer=OptimizerConfig(str(settings.get("optimizer", UNKNOWN_OPTIMIZER)), lr=_number(settings, "lr"),
                                  momentum=_number(settings, "momentum"),
                                  weight_decay=_number(settings, "weight_decay")),
        batch_size=int(batch_size), epochs=_whole(settings, "epochs", 0), seed=_whole(settings, "seed", 0),
        instruments=tuple(outputs))
    return config, Monitored(run_id, name, dict(settings))
