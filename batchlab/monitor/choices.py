"""What every monitor measures by default, how often it writes, and how the instruments a user
names are read (one place for the torch, optax and Keras monitors; imports no framework)."""

from __future__ import annotations

from typing import Any

from batchlab.errors import BatchlabError
from batchlab.instruments import resolve_instruments
from batchlab.instruments.base import StepInstrument

DEFAULT_INSTRUMENTS = ("grad_norm", "update_norm", "dist_init")  # + noise_scale when a step can split
NOISE = "noise_scale"
FLUSH_EVERY = 500  # updates between writes to the store (a flush rewrites the run's series)


def instrument_spec(instruments: Any, every: int) -> tuple[str, ...]:
    """The outputs to record (``name@k`` with a schedule), from names, presets or objects."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise BatchlabError(f"every={every!r} must be a whole number of updates >= 1")
    items = [instruments] if isinstance(instruments, (str, StepInstrument)) else list(instruments)
    names = [resolve_instruments(item) if isinstance(item, StepInstrument) else str(item).split(",")
             for item in items]
    parts = [p.strip() for group in names for p in group if p.strip()]
    return resolve_instruments([p if "@" in p or every == 1 else f"{p}@{every}" for p in parts])
