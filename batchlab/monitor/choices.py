"""What every monitor measures by default, how often it writes, and how the instruments a user
names are read (one place for the torch, optax and Keras monitors; imports no framework)."""

from __future__ import annotations

from typing import Any

from batchlab.errors import BatchlabError
from batchlab.instruments import resolve_instruments
from batchlab.instruments.base import StepInstrument

DEFAULT_INSTRUMENTS = ("grad_norm", "update_norm", "dist_init")  # + noise_scale when a step can split
NOISE = "noise_scale"
# When a monitor writes the store. A write rewrites the run's series (the store keeps one array
# per series), so its cost grows with the run: 170 ms at 100,000 updates here, which every 500
# updates would be 340 us an update, more than measuring them. So by default (``flush_every=None``)
# writes are at least MIN_FLUSH_UPDATES apart *and* wait while their total time is over
# WRITE_SHARE of the run's: the cost stays a fixed share, and a crash loses at most the last
# ~1/WRITE_SHARE write-times of the run. A whole number writes exactly every that many updates.
FLUSH_EVERY = None
MIN_FLUSH_UPDATES = 500
WRITE_SHARE = 0.02


def instrument_spec(instruments: Any, every: int) -> tuple[str, ...]:
    """The outputs to record (``name@k`` with a schedule), from names, presets or objects."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise BatchlabError(f"every={every!r} must be a whole number of updates >= 1")
    items = [instruments] if isinstance(instruments, (str, StepInstrument)) else list(instruments)
    names = [resolve_instruments(item) if isinstance(item, StepInstrument) else str(item).split(",")
             for item in items]
    parts = [p.strip() for group in names for p in group if p.strip()]
    return resolve_instruments([p if "@" in p or every == 1 else f"{p}@{every}" for p in parts])
