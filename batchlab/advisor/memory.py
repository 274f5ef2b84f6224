"""The largest batch that fits: a bounded search that only returns sizes it ran.

Lightning's ``BatchSizeFinder`` and accelerate's ``find_executable_batch_size`` return a size
that then fails, with no cap and no margin (Lightning #20231, #21154; accelerate #1934). Here:

- the sizes are tried smallest first, each by really training at it (``try_size``), and the
  peak memory after each is read (the process's resident peak on CPU, the device's peak on a
  GPU); sizes only grow, so the peak after a size is that size's peak;
- a size *fits* when its peak stays within ``1 - MARGIN`` of the limit (CPU: what batchlab lets
  a command take, ``budget.memory_limit``; GPU: the device's memory);
- before trying the next size its peak is extrapolated linearly from the last two; a size
  predicted to exceed the limit, one above ``cap``, or one that fails with an out-of-memory
  error ends the search;
- the answer is always a size that was run and fitted (never an extrapolation); larger batches
  are trained by gradient accumulation over micro-batches of that size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

MARGIN = 0.2  # keep 20% of the limit free: allocators fragment, and evaluation chunks add to the peak


@dataclass
class MemorySearch:
    fits: int | None  # the largest size that ran within the margin (None: none did)
    limit: int  # bytes
    tried: list[tuple[int, int]] = field(default_factory=list)  # (size, peak bytes after it)
    stopped: str = ""  # why the search stopped before the last candidate ('' if it tried them all)

    def describe(self) -> str:
        tried = ", ".join(f"B={b}: {peak / 2 ** 20:,.0f} MiB" for b, peak in self.tried)
        head = f"largest batch that fits: {self.fits}" if self.fits else "no batch size fitted"
        tail = f"; stopped: {self.stopped}" if self.stopped else ""
        return (f"{head} (peak memory within {1 - MARGIN:.0%} of {self.limit / 2 ** 30:,.1f} GiB; "
                f"tried {tried}){tail}")


def search(sizes: Sequence[int], try_size: Callable[[int], int | None], limit: int, cap: int | None = None
           ) -> MemorySearch:
    """Try ``sizes`` (ascending, each at most ``cap``) with ``try_size(B) -> peak bytes`` (None:
    not tried, no time left) until one does not fit or is predicted not to; see the module
    docstring."""
    result = MemorySearch(None, limit)
    allowed = (1 - MARGIN) * limit
    for b in sorted(set(sizes)):
        if cap is not None and b > cap:
            result.stopped = f"B={b} is above --max-batch {cap}"
            break
        if len(result.tried) >= 2:
            (b0, p0), (b1, p1) = result.tried[-2:]
            predicted = p1 + (p1 - p0) / (b1 - b0) * (b - b1)
            if predicted > allowed:
                result.stopped = f"B={b} would take about {predicted / 2 ** 20:,.0f} MiB"
                break
        try:
            peak = try_size(b)
        except MemoryError as exc:
            result.stopped = f"B={b} ran out of memory ({exc})"
            break
        if peak is None:
            result.stopped = f"B={b} not tried: the probing share of the time budget is spent"
            break
        result.tried.append((b, peak))
        if peak > allowed:
            result.stopped = f"B={b} took {peak / 2 ** 20:,.0f} MiB"
            break
        result.fits = b
    return result


def device_limit() -> int:
    """Bytes a batch may take: the GPU's memory where JAX runs on one, else the share of this
    machine's memory that batchlab lets a command take (``budget.memory_limit``)."""
    stats = _device_stats()
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    from batchlab.budget import memory_limit

    return memory_limit()


def peak_bytes() -> int:
    """The peak memory so far: the device's peak in use on a GPU, else this process's resident
    peak (``ru_maxrss``, KiB on Linux)."""
    stats = _device_stats()
    if stats and stats.get("peak_bytes_in_use"):
        return int(stats["peak_bytes_in_use"])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _device_stats() -> dict | None:
    """The first JAX device's memory statistics (None on CPU, where JAX keeps none)."""
    try:
        import jax

        return jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - no statistics is the CPU case
        return None
