"""Log axes that a reader can read: at least three labelled ticks, written as plain numbers.

Matplotlib's default log axis labels powers of ten only, as 10^k: an axis that spans less than
two decades then shows one or two labels (5000 alone, or 100000 and 200000) and the reader
cannot tell the scale. :func:`readable_log_axis` labels powers of ten, then also 2 and 5 times
them, then every 1..9 times them, then round linear steps, whichever first puts
:data:`MIN_LABELS` labels in view; :func:`batch_ticks` does the same for a batch-size axis,
whose ticks are the batch sizes studied.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from matplotlib import rcParams, ticker
from matplotlib.axis import Axis

MIN_LABELS = 3
MOST_DECADES = 8  # labelled powers of ten beyond this are thinned to every second (third...) one
_MANTISSAS = ((1,), (1, 2, 5), (1, 2, 3, 5), tuple(range(1, 10)))


def readable(value: float, powers: bool = False) -> str:
    """A tick label: 0.0005, 0.5, 20, 2500 -> '2.5k', 100000 -> '100k', 3e6 -> '3M'; below 0.0001,
    or below 1 with ``powers`` (an axis that reaches that far, so that its labels agree), a power
    of ten (10^-5, as mathtext) or a multiple of one (2x10^-5)."""
    if not math.isfinite(value) or value <= 0:
        return ""
    value = float(f"{value:.6g}")  # 0.30000000000000004 -> 0.3
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e3:
        return f"{value / 1e3:g}k"
    if value >= (1 if powers else 1e-4):
        return f"{value:g}"
    exponent = math.floor(math.log10(value))
    mantissa = float(f"{value / 10 ** exponent:.3g}")
    return f"$10^{{{exponent}}}$" if mantissa == 1 else f"${mantissa:g}\\times10^{{{exponent}}}$"


class LabelledLogLocator(ticker.Locator):
    """Ticks of a base-10 log axis, at least ``minimum`` of them in view whatever the span."""

    def __init__(self, minimum: int = MIN_LABELS) -> None:
        self.minimum = minimum

    def __call__(self) -> Sequence[float]:
        low, high = self.axis.get_view_interval()
        return self.tick_values(low, high)

    def tick_values(self, vmin: float, vmax: float) -> Sequence[float]:
        low, high = sorted((float(vmin), float(vmax)))
        if not (high > 0 and math.isfinite(high)):
            return []
        low = low if low > 0 else high / 1000  # a log axis cannot show 0; only matters before limits are set
        for mantissas in _MANTISSAS:
            ticks = _multiples(low, high, mantissas)
            if len(ticks) >= self.minimum:
                return _thinned(ticks) if mantissas == (1,) else ticks
        # Under a factor of about 1.5: round linear steps read better than powers of ten.
        linear = ticker.MaxNLocator(nbins=self.minimum + 1, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
        return [t for t in linear if t > 0 and low <= t <= high] or [low, high]


def _multiples(low: float, high: float, mantissas: Iterable[int]) -> list[float]:
    """``m x 10^k`` for each mantissa ``m`` that lies in [low, high] (with a rounding margin), ascending."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    values = (float(f"{m * 10.0 ** k:.6g}") for k in range(first, last + 1) for m in mantissas)
    return sorted(v for v in values if low * (1 - 1e-9) <= v <= high * (1 + 1e-9))


def _thinned(ticks: list[float]) -> list[float]:
    """Powers of ten, every ``step``-th one when there are more than :data:`MOST_DECADES`."""
    step = math.ceil(len(ticks) / MOST_DECADES)
    return ticks[::step]


class ReadableFormatter(ticker.Formatter):
    """:func:`readable` labels, all below 1 as powers of ten once one of the axis' ticks needs it."""

    smallest = math.inf  # the smallest positive tick being labelled

    def set_locs(self, locs: Sequence[float]) -> None:
        self.smallest = min((float(v) for v in locs if v > 0), default=math.inf)

    def __call__(self, value: float, pos: int | None = None) -> str:
        return readable(value, powers=self.smallest < 1e-4)


def readable_log_axis(axis: Axis, minimum: int = MIN_LABELS) -> None:
    """Label the log axis ``axis`` (``ax.xaxis`` or ``ax.yaxis``, already set to log scale) with at
    least ``minimum`` plain-number ticks (:class:`LabelledLogLocator`, :func:`readable`); the
    other decades' multiples stay as unlabelled minor ticks."""
    axis.set_major_locator(LabelledLogLocator(minimum))
    axis.set_major_formatter(ReadableFormatter())
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def batch_ticks(axis: Axis, sizes: Iterable[float], labels: Sequence[str] | None = None,
                minimum: int = MIN_LABELS) -> None:
    """A log batch-size axis with one labelled tick per batch size (``labels``, default the
    sizes as integers). With fewer than ``minimum`` sizes, the powers of two between them are
    labelled too (smaller, grey), and if that is still too few, one power of two beyond each
    end, the axis widened to show it: a reader needs three numbers to see the scale."""
    sizes = sorted({float(b) for b in sizes})
    labels = list(labels) if labels is not None else [str(int(b)) for b in sizes]
    axis.set_major_locator(ticker.FixedLocator(sizes))
    axis.set_major_formatter(ticker.FixedFormatter(labels))
    labelled = sum(1 for label in labels if label)
    extra = _powers_of_two_between(sizes) if labelled < minimum else []
    if sizes and labelled + len(extra) < minimum:
        extra = [_power_of_two_below(sizes[0]), *extra, _power_of_two_above(sizes[-1])]
        low, high = extra[0] / 1.25, extra[-1] * 1.25
        (axis.axes.set_xlim if axis is axis.axes.xaxis else axis.axes.set_ylim)(low, high)
    axis.set_minor_locator(ticker.FixedLocator(extra))
    axis.set_minor_formatter(ticker.FixedFormatter([str(int(b)) for b in extra]))
    # As long as the major ticks, so that the extra labels sit in line with the batch sizes'.
    axis.set_tick_params(which="minor", labelsize="small", labelcolor="dimgrey",
                         length=rcParams[f"{axis.axis_name}tick.major.size"])


def _powers_of_two_between(sizes: list[float]) -> list[float]:
    if not sizes:
        return []
    first, last = math.ceil(math.log2(sizes[0])), math.floor(math.log2(sizes[-1]))
    return [2.0 ** k for k in range(first, last + 1) if 2.0 ** k not in sizes]


def _power_of_two_below(size: float) -> float:
    return 2.0 ** (math.ceil(math.log2(size)) - 1)


def _power_of_two_above(size: float) -> float:
    return 2.0 ** (math.floor(math.log2(size)) + 1)


def batch_axis(ax, sizes) -> None:
    """A batch-size x axis: log base 2, ticks at the sizes studied (a size within a factor 1.6
    of the previous labelled one, such as N = 1437 after 1024, ticks unlabelled: the two labels
    would run into each other), a label, a light grid."""
    ax.set_xscale("log", base=2)
    sizes = sorted({float(b) for b in sizes})
    labels, last = [], None
    for b in sizes:
        crowded = last is not None and b / last < 1.6
        labels.append("" if crowded else str(int(b)))
        last = last if crowded else b
    batch_ticks(ax.xaxis, sizes, labels)
    ax.set_xlabel("batch size B (log scale)")
    ax.grid(alpha=0.3, which="both")
