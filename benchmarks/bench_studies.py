"""Wall time of the studies end to end, as a user runs them: one fresh ``batchlab study`` process each.

- *cold*: an empty compilation cache and an empty store: everything is compiled and trained.
- *warm cache*: a new empty store, but the compiled programs of the cold run are reused.
Also ``batchlab study all --quick`` (cold and warm cache). Targets on a 2-core CPU: each
faithful study under 3 minutes, ``study all --quick`` under 2 minutes.

    python benchmarks/bench_studies.py                   # brownlee gradient-norm distance lr-recovery
    python benchmarks/bench_studies.py --studies all     # every study
    python benchmarks/bench_studies.py --quick-only      # just `study all --quick`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import OtherCpu, report_other_cpu, save

DEFAULT = ("brownlee", "gradient-norm", "distance", "lr-recovery")


def timed_study(args: list[str], cache: Path, root: Path) -> float:
    """Seconds one ``batchlab study ...`` process takes, with its own new store and output folder."""
    db, out = root / f"{time.monotonic_ns()}.db", root / f"out{time.monotonic_ns()}"
    command = [sys.executable, "-m", "batchlab.cli", "study", *args, "--db", str(db), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "BATCHLAB_CACHE_DIR": str(cache)}, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr.strip()[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", default=",".join(DEFAULT), help="comma-separated names, or 'all'")
    parser.add_argument("--quick-only", action="store_true")
    options = parser.parse_args()
    from batchlab.studies import available

    names = [] if options.quick_only else (available() if options.studies == "all" else options.studies.split(","))
    rows = []
    load = OtherCpu()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in names + ["all --quick"]:
            cache = root / f"cache-{name.split()[0]}"
            args = name.split()
            cold = timed_study(args, cache, root)
            warm = timed_study(args, cache, root)
            rows.append({"study": name, "cold_seconds": cold, "warm_seconds": warm})
            print(f"{'batchlab study ' + name:<40} cold {cold:6.1f} s   warm cache {warm:6.1f} s", flush=True)
    target = {"all --quick": 120.0}
    print("\n| command | cold (empty cache) | warm cache | target |\n|---|---|---|---|")
    for row in rows:
        limit = target.get(row["study"], 180.0)
        print(f"| `batchlab study {row['study']}` | {row['cold_seconds']:.0f} s | {row['warm_seconds']:.0f} s "
              f"| < {limit:.0f} s |")
    report_other_cpu({"the benchmark": load.measure()})
    print(f"results: {save('bench_studies', rows)}")


if __name__ == "__main__":
    main()
