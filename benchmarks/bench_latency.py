"""Seconds from command to answer: the three commands of the latency issue, whole processes,
with an empty compilation cache (cold) and with the cache those runs filled (warm).

Each command runs in a fresh process against a fresh store; the cache folder is emptied
before every cold run. Prints the median of ``--repeats`` runs, the targets, and each
command's ``--profile`` table from its last warm run (where the time goes).

    python benchmarks/bench_latency.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import OtherCpu, report_other_cpu, save  # noqa: E402

SWEEP = ["sweep", "--data", "digits", "--model", "mlp", "--batch-sizes", "1:1024,full"]
COMMANDS = {
    # name: (arguments, cold target, warm target) in seconds
    "sweep 12 cohorts x 1 epoch": (SWEEP + ["--lr", "0.01", "--seeds", "1", "--epochs", "1", "--executor", "local"],
                                   4.0, None),
    "sweep 180 runs x 30 epochs": (SWEEP + ["--lr", "0.001,0.003,0.01,0.03,0.1", "--seeds", "3", "--epochs", "30"],
                                   10.0, 7.0),
    "train 18 runs x 200 epochs": (["train", "--data", "blobs", "--batch-size", "1,32,full", "--lr", "0.001,0.01",
                                    "--momentum", "0.9", "--epochs", "200", "--seeds", "3"], 4.0, 3.0),
}


def run(arguments: list[str], cache: Path, work: Path, profile: bool = False, tree: str | None = None
        ) -> tuple[float, str]:
    """Wall seconds of one whole ``batchlab`` process (and its stderr); ``tree``: run the
    batchlab of another checkout (an earlier version, for a before/after table)."""
    store = work / "runs.db"
    store.unlink(missing_ok=True)
    launcher = [sys.executable, "-m", "batchlab.cli"] if tree else ["batchlab"]
    command = launcher + (["--profile"] if profile else []) + arguments + ["--db", str(store)]
    if arguments[0] == "train":
        command += ["--out", str(work / "out")]
    t = time.perf_counter()
    done = subprocess.run(command, cwd=work, capture_output=True, text=True,
                          env={**os.environ, "BATCHLAB_CACHE_DIR": str(cache),
                               **({"PYTHONPATH": str(Path(tree).resolve())} if tree else {})})
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()}")
    return seconds, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", help="time the batchlab of this checkout instead (no --profile tables)")
    args = parser.parse_args()
    other = OtherCpu()
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        for name, (arguments, cold_target, warm_target) in COMMANDS.items():
            cold, warm = [], []
            for _ in range(args.repeats):
                shutil.rmtree(cache, ignore_errors=True)
                cold.append(run(arguments, cache, work, tree=args.tree)[0])
                warm.append(run(arguments, cache, work, tree=args.tree)[0])
            if not args.tree:
                profiles[name] = run(arguments, cache, work, profile=True)[1]
            rows.append({"command": name, "cold": statistics.median(cold), "warm": statistics.median(warm),
                         "cold_target": cold_target, "warm_target": warm_target})
    print(f"{'command':<30}{'cold s':>8}{'target':>8}{'warm s':>8}{'target':>8}")
    for row in rows:
        warm_target = "-" if row["warm_target"] is None else f"{row['warm_target']:.0f}"
        print(f"{row['command']:<30}{row['cold']:>8.1f}{row['cold_target']:>8.0f}{row['warm']:>8.1f}{warm_target:>8}")
    for name, table in profiles.items():
        print(f"\n{name} (warm, --profile):\n{table.strip()}")
    report_other_cpu({"the benchmark": other.measure()})
    save("bench_latency" + ("_tree" if args.tree else ""), {"rows": rows, "profiles": profiles, "tree": args.tree})


if __name__ == "__main__":
    main()
