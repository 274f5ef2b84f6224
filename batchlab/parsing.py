"""Parsing of what users give: text from the command line or a config file, numbers, lists
(``"1,32,full"``, ``"1:1024"``), seeds and widths. Each error is one line that names the
setting and shows the bad value as text, so the command line, a config file and the Python
API say the same thing about the same value."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from batchlab.config import Phase
from batchlab.errors import BatchlabError

FULL = "full"  # batch size N: batch gradient descent
SEED_LIMIT = 2 ** 63  # seeds are 64-bit (JAX's PRNGKey and NumPy take any value in [0, 2**63))
MAX_SEEDS = 10_000  # a seed count above this is a typo, not an experiment (it would build the list first)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38  # the smallest normal and the largest float32
# Numbers as people write them, in ASCII: Python's int() and float() also take "3_2" and
# full-width digits, which a typo or a pasted character would silently turn into 32.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def shown(value: Any) -> str:
    """A value as an error shows it: its text, quoted (``'abc'``, ``'1.5'``, ``'1,2'``)."""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    text = str(value).strip()
    return repr(text if len(text) <= 60 else text[:57] + "...")


def items_of(spec: Any) -> list:
    """A list as given (list or tuple), or the comma-separated parts of a text or number."""
    return list(spec) if isinstance(spec, (list, tuple)) else [p.strip() for p in str(spec).split(",")]


def parse_int(text: Any, what: str) -> int:
    """An integer from ``12``, ``"12"``, ``"1e3"`` or ``"12.0"``; exact for integers of any size.
    ``True``/``False`` are not integers here."""
    if isinstance(text, bool):
        raise BatchlabError(f"{what} must be an integer, got {shown(text)}")
    if isinstance(text, int):
        return text
    text = str(text).strip()
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts
            raise BatchlabError(f"{what} {shown(text)} is too large") from None
    if not _NUMBER.fullmatch(text):
        raise BatchlabError(f"{what} must be an integer, got {shown(text)}")
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise BatchlabError(f"{what} must be an integer, got {shown(text)}")
    return int(value)


def parse_float(item: Any, what: str, *, positive: bool = False, low: float | None = None,
                high: float | None = None, closed: bool = False) -> float:
    """A finite number, if asked > 0 and within [low, high) ([low, high] with ``closed``)."""
    try:
        if isinstance(item, bool) or isinstance(item, str) and not _NUMBER.fullmatch(item.strip()):
            raise ValueError
        value = float(item.strip()) if isinstance(item, str) else float(item)
    except (TypeError, ValueError):
        raise BatchlabError(f"{what} must be a number, got {shown(item)}") from None
    if not math.isfinite(value):
        raise BatchlabError(f"{what} must be finite, got {shown(item)}")
    if value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
        raise BatchlabError(f"{what} {shown(item)} cannot be held in float32, which batchlab computes in "
                            f"(sizes {FLOAT32_TINY:.3g} to {FLOAT32_MAX:.3g}, or 0)")
    if positive and value <= 0:
        raise BatchlabError(f"{what} must be > 0, got {shown(item)}")
    above = high is not None and (value > high if closed else value >= high)
    if low is not None and value < low or above:
        if high is None:
            raise BatchlabError(f"{what} must be >= {low:g}, got {shown(item)}")
        raise BatchlabError(f"{what} must lie in [{low:g}, {high:g}{']' if closed else ')'}, got {shown(item)}")
    return value


def parse_floats(spec: Any, what: str, **bounds: Any) -> list[float]:
    """``"0.001,0.01"`` -> [0.001, 0.01], each checked by :func:`parse_float`."""
    out = [parse_float(item, what, **bounds) for item in items_of(spec) if item != ""]
    if not out:
        raise BatchlabError(f"no {what} given")
    return out


def parse_bool(value: Any, what: str) -> bool:
    """``True``/``False``, or their text (true/false, yes/no, 1/0, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise BatchlabError(f"{what} must be true or false, got {shown(value)}")


def parse_choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``, exactly."""
    text = str(value).strip()
    if isinstance(value, str) and text in choices:
        return text
    raise BatchlabError(f"unknown {what} {shown(value)}: choose one of {', '.join(choices)}")


def check_seed(value: int, what: str = "seed") -> int:
    """A seed must be an integer in [0, 2**63): what the random generators accept."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise BatchlabError(f"{what} must be an integer in [0, 2**63), got {shown(value)}")
    return value


def parse_batch_sizes(spec: str | int | list) -> list[int | str]:
    """``"1,32,full"`` -> [1, 32, 'full']; ``"1:1024"`` -> powers of two 1..1024; ints pass through.

    Values are checked against N later (:func:`resolve_batch_size`); here only their form.
    """
    items = [spec] if isinstance(spec, int) and not isinstance(spec, bool) else items_of(spec)
    out: list[int | str] = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() == FULL:
            out.append(FULL)
        elif isinstance(item, str) and ":" in item:
            lo_text, hi_text = item.split(":", 1)
            lo, hi = parse_int(lo_text, "batch size"), parse_int(hi_text, "batch size")
            if lo < 1 or hi < lo:
                raise BatchlabError(f"batch-size range {shown(item)} must be a:b with 1 <= a <= b")
            b = lo
            while b <= hi:
                out.append(b)
                b *= 2
        elif isinstance(item, str):
            if not item.strip():
                raise BatchlabError(f"empty entry in batch sizes {shown(spec)}")
            out.append(parse_int(item, "batch size"))
        elif isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        else:
            raise BatchlabError(f"batch size must be an integer or 'full', got {shown(item)}")
    for b in out:
        if b != FULL and b < 1:
            raise BatchlabError(f"batch size must be >= 1, got {shown(b)}")
    if not out:
        raise BatchlabError("no batch size given")
    return out


def resolve_batch_size(b: int | str, n: int) -> int:
    """'full' -> N; an integer must lie in [1, N] (an error names it otherwise)."""
    from batchlab.budget import check_batch_size

    return n if b == FULL else check_batch_size(b, n)


def parse_seeds(spec: str | int | list) -> list[int]:
    """``5`` -> seeds 0..4; ``"3,7"`` -> [3, 7]; each seed in [0, 2**63), at most 10,000 of them."""
    if isinstance(spec, (list, tuple)) or "," in str(spec):
        seeds = [parse_int(s, "seed") for s in items_of(spec)]
    else:
        count = parse_int(spec, "number of seeds")
        if not 1 <= count <= MAX_SEEDS:
            raise BatchlabError(f"number of seeds must lie in [1, {MAX_SEEDS:,}], got {shown(count)}")
        return list(range(count))
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise BatchlabError(f"give 1 to {MAX_SEEDS:,} seeds, got {len(seeds)}")
    return [check_seed(s) for s in seeds]


def parse_ints(spec: str | int | list, what: str, low: int = 0) -> list[int]:
    """``"2,30"`` -> [2, 30]; each an integer >= ``low``."""
    values = [parse_int(item, what) for item in items_of(spec)]
    if not values or any(v < low for v in values):
        raise BatchlabError(f"{what} must be integers >= {low}, got {shown(spec)}")
    return values


def parse_widths(spec: str | int | list | tuple) -> tuple[int, ...]:
    """``"256,256"`` -> (256, 256); ``""`` -> () (no hidden layer)."""
    widths = tuple(parse_int(w, "hidden width") for w in items_of(spec) if str(w).strip())
    if any(w < 1 for w in widths):
        raise BatchlabError(f"hidden widths must be >= 1, got {shown(spec)}")
    return widths


# ---------------------------------------------------------------- readers of one setting (settings.py)

def text_value(what: str) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise BatchlabError(f"{what} must be a non-empty text, got {shown(value)}")
        return value.strip()
    return read


def choice_of(what: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    return lambda value: parse_choice(value, what, choices)


def choices_of(what: str, choices: tuple[str, ...]) -> Callable[[Any], list[str]]:
    return lambda value: list(dict.fromkeys(parse_choice(v, what, choices) for v in items_of(value)))


def device_count_value(value: Any) -> int | str:
    """``all`` (every device JAX sees, counted when the runs are resolved) or a count >= 1."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    return integer_at_least("devices", 1)(value)


def integer_at_least(what: str, low: int) -> Callable[[Any], int]:
    def read(value: Any) -> int:
        number = parse_int(value, what)
        if number < low:
            raise BatchlabError(f"{what} must be an integer >= {low}, got {shown(value)}")
        return number
    return read


def number_of(what: str, **bounds: Any) -> Callable[[Any], float]:
    return lambda value: parse_float(value, what, **bounds)


def numbers_of(what: str, **bounds: Any) -> Callable[[Any], list[float]]:
    return lambda value: parse_floats(value, what, **bounds)


def boolean(what: str) -> Callable[[Any], bool]:
    return lambda value: parse_bool(value, what)


def seed_value(what: str) -> Callable[[Any], int]:
    return lambda value: check_seed(parse_int(value, what), what)


def epoch_list(value: Any) -> tuple[int, ...]:
    """Epochs such as ``"20,40"``; nothing (``""``, ``[]``) is an empty list."""
    if not [v for v in items_of(value) if str(v).strip()]:
        return ()
    return tuple(parse_ints(value, "decay epoch", low=1))


def parse_phases(value: Any) -> tuple[Phase, ...]:
    """Phases as text ``"10:B=64,20:lr=0.001"`` (after epoch 10 batch size 64, after epoch 20
    lr 0.001; ``10:B=full:lr=0.1`` changes both), or from Python :class:`Phase` objects,
    ``(epoch, batch_size, lr)`` tuples (None = unchanged) or dicts. Checked against N and the
    epochs in ``grid.resolve_phases``."""
    if isinstance(value, str):
        return tuple(_phase_text(part) for part in value.split(",") if part.strip())
    if not isinstance(value, (list, tuple)):
        raise BatchlabError(f"phases must be a list of (epoch, batch_size, lr), got {shown(value)}")
    out = []
    for phase in value:
        try:
            if isinstance(phase, dict):
                phase = Phase(**phase)
            elif isinstance(phase, (tuple, list)):
                phase = Phase(*phase)
        except TypeError:
            raise BatchlabError(f"a phase is (epoch, batch_size, lr), got {shown(phase)}") from None
        if isinstance(phase, str):
            phase = _phase_text(phase)
        if not isinstance(phase, Phase):
            raise BatchlabError(f"a phase is (epoch, batch_size, lr), got {shown(phase)}")
        out.append(phase)
    return tuple(out)


def _phase_text(text: str) -> Phase:
    epoch, *changes = [p.strip() for p in text.split(":")]
    fields: dict[str, Any] = {}
    for change in changes:
        key, _, given = change.partition("=")
        key = {"b": "batch_size", "batch_size": "batch_size", "lr": "lr"}.get(key.strip().lower())
        if key is None or not given.strip() or key in fields:
            raise BatchlabError(f"a phase is EPOCH:B=SIZE and/or :lr=RATE (e.g. 10:B=64), got {shown(text)}")
        fields[key] = given.strip() if key == "batch_size" and given.strip() == "full" else \
            (parse_int(given, "phase batch size") if key == "batch_size" else parse_float(given, "phase learning rate"))
    return Phase(parse_int(epoch, "phase start epoch"), fields.get("batch_size"), fields.get("lr"))


BUDGET_KINDS = ("epochs", "steps", "samples")


def parse_budget(spec: Any) -> tuple[str, float]:
    """``"epochs=30"`` -> ("epochs", 30.0); also ``steps=N`` and ``samples=N`` (N > 0)."""
    kind, _, value = str(spec).partition("=")
    kind = kind.strip()
    if kind not in BUDGET_KINDS or not value.strip():
        raise BatchlabError(f"budget must be epochs=N, steps=N or samples=N, got {shown(spec)}")
    amount = parse_float(value, f"{kind} budget", positive=True)
    if kind == "epochs" and amount != int(amount):
        raise BatchlabError(f"an epochs budget must be a whole number, got {shown(value)}")
    return kind, amount
