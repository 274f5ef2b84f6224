"""Cost of per-step instruments over bare training (issue target: ``standard`` <= 15%).

Steady state: compiled programs come from the on-disk cache and each setting is timed
``REPEATS`` times, interleaved with the bare run, taking the fastest training time
(the least disturbed by other work on the machine; medians moved by +-30% here)
(``RunResult.train_seconds``, compilation excluded).

Usage: python benchmarks/bench_instruments.py
"""

from __future__ import annotations


import batchlab

from results_file import save  # benchmarks/results_file.py

REPEATS = 7
CASES = [("blobs", 32, 200, 1), ("blobs", 32, 200, 16), ("digits", 64, 100, 1), ("digits", 64, 100, 16)]
PRESETS = ("cheap", "standard", "full")


def train_seconds(data: str, b: int, epochs: int, seeds: int, instruments: str | None) -> float:
    result = batchlab.train(data, "mlp", batch_size=b, epochs=epochs, lr=0.01, momentum=0.9, seeds=seeds,
                            instruments=instruments)
    return result.runs[0].train_seconds


def main() -> None:
    rows = []
    print(f"{'case':<28}" + "".join(f"{p:>12}" for p in PRESETS) + "   (overhead of the fastest training time)")
    for data, b, epochs, seeds in CASES:
        settings = (None, *PRESETS)
        for setting in settings:  # compile (or read from cache) once
            train_seconds(data, b, epochs, seeds, setting)
        times: dict = {s: [] for s in settings}
        for _ in range(REPEATS):
            for setting in settings:
                times[setting].append(train_seconds(data, b, epochs, seeds, setting))
        bare = min(times[None])
        overhead = {p: min(times[p]) / bare - 1 for p in PRESETS}
        label = f"{data} B={b} {epochs} ep {seeds} seed(s)"
        print(f"{label:<28}" + "".join(f"{100 * overhead[p]:>11.0f}%" for p in PRESETS) + f"   bare {bare:.3f}s")
        rows.append({"data": data, "batch_size": b, "epochs": epochs, "seeds": seeds, "bare_seconds": bare,
                     "overhead": overhead})
    save("bench_instruments", rows)


if __name__ == "__main__":
    main()
