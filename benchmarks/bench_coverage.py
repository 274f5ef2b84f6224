"""Coverage of every interval method by simulation, at full size (``analysis/coverage.py``).

Each method's nominal 95% interval is computed on ``--sims`` simulated data sets (4,000 by
default) of the sizes the studies use (2, 3 and 5 seeds; 3 and 8 batch sizes; 200 and 1,000
Monte-Carlo trials) and the share that covers the true value is printed as a markdown table:
93-97% is the target (a one-sided verdict test: at most 2.5% false "agrees"). The methods
batchlab no longer uses are listed too, to show why. About two minutes on 2 cores.

    python benchmarks/bench_coverage.py
    python benchmarks/bench_coverage.py --sims 2000 --seed 1
"""

from __future__ import annotations

import argparse
import time

from harness import save

from batchlab.analysis.coverage import FALSE_AGREES, coverage_table


def markdown(table) -> str:
    lines = ["| method | simulated data | n | data sets | nominal | measured | used |", "|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        nominal = "<= 2.5% false agrees" if row.kind == FALSE_AGREES else "95% coverage"
        lines.append(f"| `{row.method}` | {row.model} | {row.n} | {row.data_sets:,} | {nominal} | "
                     f"{row.rate:.1%} | {'yes' if row.used else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=4000, help="simulated data sets per case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    table = coverage_table(args.sims, args.seed)
    print(markdown(table))
    print(f"\n{len(table)} cases, {time.perf_counter() - start:.0f} s")
    save("bench_coverage", table.to_dict("records"))


if __name__ == "__main__":
    main()
