"""Cost of per-step instruments over bare training (issue target: ``standard`` <= 15%).

Each case (data, B, epochs, seeds) is timed in ``PROCESSES`` fresh worker processes. A
worker trains every setting once (compiled programs come from batchlab's on-disk cache, or
are compiled then), then ``REPEATS`` rounds of every setting in a shuffled order, and keeps each
setting's fastest training time (``RunResult.train_seconds``: the epochs, compilation
excluded; the least disturbed by other work on the machine). Its overheads are
``fastest(setting) / fastest(bare) - 1``. The script prints the median over the workers and
their range: on this shared 2-core machine one process can be 10-20% slower than the next
at the same program, which a single process's numbers cannot tell from a real cost.

"bare" trains without instruments, the way a run without ``--instruments`` does.

Usage: python benchmarks/bench_instruments.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

from harness import OtherCpu, report_other_cpu, run_worker, save  # benchmarks/harness.py

PROCESSES = 5
REPEATS = 10
# (data, B, epochs, seeds); the 16-run cohorts train fewer epochs to keep the script short.
CASES = [("blobs", 32, 200, 1), ("blobs", 32, 100, 16), ("digits", 64, 100, 1), ("digits", 64, 30, 16)]
SETTINGS = ("bare", "cheap", "standard", "full")


def train_seconds(data: str, b: int, epochs: int, seeds: int, setting: str) -> float:
    import batchlab

    result = batchlab.train(data, "mlp", batch_size=b, epochs=epochs, lr=0.01, momentum=0.9, seeds=seeds,
                            instruments=None if setting == "bare" else setting)
    return result.runs[0].train_seconds


def worker(data: str, b: int, epochs: int, seeds: int) -> dict[str, float]:
    """Fastest training time of each setting in this process."""
    for setting in SETTINGS:  # compile, or read the programs from the cache
        train_seconds(data, b, epochs, seeds, setting)
    times: dict[str, list[float]] = {s: [] for s in SETTINGS}
    order, shuffle = list(SETTINGS), random.Random(0).shuffle
    for _ in range(REPEATS):
        shuffle(order)  # no setting always runs right after another
        for setting in order:
            times[setting].append(train_seconds(data, b, epochs, seeds, setting))
    return {s: min(t) for s, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="single-run cases, 3 processes: a smoke check")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)  # data B epochs seeds
    args = parser.parse_args()
    if args.worker:
        data, b, epochs, seeds = args.worker
        print(json.dumps(worker(data, int(b), int(epochs), int(seeds))))
        return

    cases = [c for c in CASES if c[3] == 1] if args.quick else CASES
    processes = 3 if args.quick else PROCESSES
    print(f"{'case':<28}" + "".join(f"{s:>18}" for s in SETTINGS[1:])
          + f"   (overhead over bare: median [min, max] of {processes} processes)")
    phase, rows = OtherCpu(), []
    for data, b, epochs, seeds in cases:
        fastest = [run_worker(__file__, "--worker", data, str(b), str(epochs), str(seeds)) for _ in range(processes)]
        overhead = {s: [f[s] / f["bare"] - 1 for f in fastest] for s in SETTINGS[1:]}
        cells = "".join(f"{100 * statistics.median(v):>6.0f}% [{100 * min(v):>3.0f},{100 * max(v):>3.0f}]"
                        for v in overhead.values())
        bare = statistics.median(f["bare"] for f in fastest)
        print(f"{f'{data} B={b} {epochs} ep {seeds} seed(s)':<28}{cells}   bare {bare:.3f}s", flush=True)
        rows.append({"data": data, "batch_size": b, "epochs": epochs, "seeds": seeds, "fastest": fastest,
                     "median_overhead": {s: statistics.median(v) for s, v in overhead.items()}})
    contention = {"the timings": phase.measure()}
    report_other_cpu(contention)
    save("bench_instruments", {"processes": processes, "repeats": REPEATS, "rows": rows, "other_cpu": contention})


if __name__ == "__main__":
    main()
