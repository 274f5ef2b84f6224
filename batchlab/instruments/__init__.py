"""Instruments: what is measured during training, where and when; presets are plain lists.

Per-step instruments (``instruments/step/``, one file each, found by name): computed at each
update from what the step has (``base.StepInstrument``). Checkpoint instruments
(``gradients.py``, ``hessian.py``, ``checkpoint.py``): measured between epochs on saved
parameters.

A run's config lists the *outputs* it records (``grad_norm``, ``noise_scale``,
``noise_trace``, ...), each optionally with a schedule ``name@k`` (every k-th update);
:func:`step_instruments` turns such a list back into the instruments that produce them.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from batchlab.errors import BatchlabError
from batchlab.instruments import step as _step_package
from batchlab.instruments.base import Schedule, Step, StepInstrument

__all__ = ["StepInstrument", "Step", "Schedule", "PRESETS", "STEP_INSTRUMENTS", "resolve_instruments",
           "step_instruments", "register"]


def _discover() -> dict[str, StepInstrument]:
    """Every ``INSTRUMENT`` declared by a module of ``instruments/step/``, cheapest first."""
    found = []
    for module in pkgutil.iter_modules(_step_package.__path__):
        declared = getattr(importlib.import_module(f"{_step_package.__name__}.{module.name}"), "INSTRUMENT", None)
        if isinstance(declared, StepInstrument):
            found.append(declared)
    return {ins.name: ins for ins in sorted(found, key=lambda ins: (ins.cost, ins.name))}


STEP_INSTRUMENTS: dict[str, StepInstrument] = _discover()
_BY_OUTPUT: dict[str, StepInstrument] = {out: ins for ins in STEP_INSTRUMENTS.values() for out in ins.outputs}

# Presets, ordered by cost (Cockpit's economy/business/full idea); "full" is every built-in one.
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "cheap": ("grad_norm", "update_norm"),
    "standard": ("grad_norm", "update_norm", "dist_init"),  # Shen's three
    "full": tuple(STEP_INSTRUMENTS),
}


def register(instrument: StepInstrument) -> StepInstrument:
    """Make ``instrument`` known by name in this process (one declared outside batchlab, e.g.
    in a test or a notebook); its outputs must not clash with another instrument's."""
    existing = STEP_INSTRUMENTS.get(instrument.name)
    if existing is not None and existing != instrument:
        raise BatchlabError(f"another instrument is called {instrument.name!r} already")
    for out in instrument.outputs:
        known = _BY_OUTPUT.get(out)
        if known is not None and known.name != instrument.name:
            raise BatchlabError(f"instrument {instrument.name!r} records {out!r}, which {known.name!r} records too")
    STEP_INSTRUMENTS[instrument.name] = instrument
    _BY_OUTPUT.update((out, instrument) for out in instrument.outputs)
    return instrument


def resolve_instruments(spec: Any) -> tuple[str, ...]:
    """Presets, names (of instruments or of their outputs) and :class:`StepInstrument` objects,
    each name optionally ``@k`` (every k-th update) -> the sorted outputs recorded (what a run's
    config holds; an instrument with several outputs records them all)."""
    if spec is None:
        return ()
    items = [spec] if isinstance(spec, (str, StepInstrument)) else list(spec)
    every: dict[str, int] = {}
    for item in items:
        parts = [register(item).name] if isinstance(item, StepInstrument) else str(item).split(",")
        for part in (p.strip() for p in parts):
            if part:
                name, _, period = part.partition("@")
                for ins in _named(name.strip()):
                    k = _period(period, part)
                    if every.get(ins.name, k) != k:
                        raise BatchlabError(f"instrument {ins.name!r} is asked for with two schedules")
                    every[ins.name] = k
    outputs = [f"{out}@{k}" if k > 1 else out for name, k in every.items() for out in STEP_INSTRUMENTS[name].outputs]
    return tuple(sorted(outputs))


def _named(name: str) -> list[StepInstrument]:
    if name in PRESETS:
        return [STEP_INSTRUMENTS[n] for n in PRESETS[name]]
    if name in STEP_INSTRUMENTS:
        return [STEP_INSTRUMENTS[name]]
    if name in _BY_OUTPUT:
        return [_BY_OUTPUT[name]]
    raise BatchlabError(f"unknown instrument {name!r}: use a preset ({', '.join(PRESETS)}) "
                        f"or names from {', '.join(_BY_OUTPUT)}")


def _period(text: str, part: str) -> int:
    if not text:
        return 1
    if not text.strip().isdigit() or int(text) < 1:
        raise BatchlabError(f"instrument schedule {part!r} must be name@K with K a whole number >= 1")
    return int(text)


def step_instruments(outputs: tuple[str, ...]) -> tuple[StepInstrument, ...]:
    """The instruments (with their schedules) that record ``outputs`` (a run config's list),
    cheapest first."""
    chosen: dict[str, StepInstrument] = {}
    for entry in outputs:
        name, _, period = entry.partition("@")
        if name not in _BY_OUTPUT:
            raise BatchlabError(f"instrument output {name!r} is not known in this process (an instrument "
                                f"declared outside batchlab must be registered where the run trains)")
        ins = _BY_OUTPUT[name]
        chosen[ins.name] = dataclasses.replace(ins, every=int(period or 1))
    return tuple(sorted(chosen.values(), key=lambda ins: (ins.cost, ins.name)))


def uses_halves(outputs: tuple[str, ...]) -> bool:
    """Whether recording ``outputs`` needs each batch's gradient as two halves."""
    return any(ins.halves for ins in step_instruments(outputs))


def output_names(instruments: tuple[StepInstrument, ...]) -> tuple[str, ...]:
    """The per-step values of a step that measures ``instruments``, in the order an epoch packs them."""
    return ("mb_loss", "mb_score") + tuple(out for ins in instruments for out in ins.outputs)
