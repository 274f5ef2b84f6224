"""Instruments: what is measured during training, where and when; presets are plain lists.

Per-step instruments (inside the compiled step, ``engine/step_stats.py``):
``grad_norm``, ``update_norm``, ``dist_init``, ``weight_norm`` and the online two-batch
noise-scale estimate ``noise_grad_sq``, ``noise_trace``, ``noise_scale``.
"""

from __future__ import annotations

from batchlab.engine.step_stats import NOISE, NORMS
from batchlab.errors import BatchlabError
from batchlab.instruments.base import EVERY_STEP, Instrument, Schedule

STEP_INSTRUMENTS = {name: Instrument(name, "step", EVERY_STEP, cost=1) for name in NORMS} | {
    name: Instrument(name, "step", EVERY_STEP, cost=2) for name in NOISE}

# Presets, ordered by cost (Cockpit's economy/business/full idea).
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "cheap": ("grad_norm", "update_norm"),
    "standard": ("grad_norm", "update_norm", "dist_init"),  # Shen's three
    "full": NORMS + NOISE,
}


def resolve_instruments(spec: str | tuple | list | None) -> tuple[str, ...]:
    """A preset name or a comma-separated list of per-step instrument names -> sorted names."""
    if spec is None:
        return ()
    items = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if part in PRESETS:
                names += PRESETS[part]
            elif part in STEP_INSTRUMENTS:
                names.append(part)
            else:
                raise BatchlabError(f"unknown instrument {part!r}: use a preset ({', '.join(PRESETS)}) "
                                    f"or names from {', '.join(STEP_INSTRUMENTS)}")
    if any(n in NOISE for n in names):
        names += NOISE  # they all come from one computation
    return tuple(sorted(set(names)))


__all__ = ["Instrument", "Schedule", "PRESETS", "STEP_INSTRUMENTS", "resolve_instruments"]
