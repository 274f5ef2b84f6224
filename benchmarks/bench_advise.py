"""What ``batchlab advise`` recommends and whether it holds on seeds it never saw.

For the digits CNN (built in) and a PyTorch MLP (64-128-10), ``advise`` runs with a 3-minute
budget to ``test_acc>=0.95``; then separate runs with 5 fresh seeds (10-14), each trained alone
(its own clock), measure the time to the target of three settings: the recommended (B, lr), B =
32 at the best lr the advice found for it, and full batch (B = N) at its best lr. Printed: the
recommendation, the advice's wall time, and per setting the geometric mean time to the target
(training clock, compilation excluded) with a 95% t-interval on the log scale, the share of
seeds that reached it, and the ratio to the recommended setting. About 8 minutes on 2 cores.

    python benchmarks/bench_advise.py
    python benchmarks/bench_advise.py --budget 90s --target "test_acc>=0.93"
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from harness import save

import batchlab
from batchlab.advisor.runner import plain
from batchlab.analysis.intervals import geometric_t
from batchlab.analysis.scaling import to_target
from batchlab.store import series_frame
from batchlab.targets import parse_target

SEEDS = [10, 11, 12, 13, 14]
N_TRAIN = 1437  # digits' training rows: B = N is full batch


def torch_mlp():
    import torch

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def validate(model, b: int, lr: float, epochs: int, target, db: Path, **fixed) -> dict:
    """Time to the target of (b, lr) over SEEDS, each seed its own run and clock."""
    seconds, reached = [], 0
    for seed in SEEDS:
        result = batchlab.train("digits", model, batch_size=b, lr=lr, epochs=epochs, seeds=[seed], db=db, **fixed)
        hit = to_target(series_frame(result.runs, "epoch"), target).seconds.iloc[0]
        if math.isfinite(hit):
            seconds.append(hit)
            reached += 1
    iv = geometric_t(seconds)
    return {"batch_size": b, "lr": lr, "epochs": epochs, "seconds": iv.mean, "low": iv.low, "high": iv.high,
            "reached": f"{reached}/{len(SEEDS)}"}


def tuned_lr(model, b: int, epochs: int, target, db: Path, optimizer: str, **fixed) -> float:
    """The best lr at B where the advice found none (not tried, or cut by its budget): seven lrs a
    factor 2 apart, seeds 0 and 1 (not the validation seeds), by batchlab's best-run rule."""
    from batchlab.advisor.plan import CENTER_LR, lr_grid
    from batchlab.analysis.advice import per_batch

    result = batchlab.train("digits", model, batch_size=b, lr=lr_grid(CENTER_LR[optimizer] * (b / 32), 3, 3),
                            epochs=epochs, seeds=[0, 1], db=db, optimizer=optimizer, **fixed)
    return float(per_batch(result.history, result.summary, target, {b: math.nan}, 1437)[1].lr.iloc[0])


def one(label: str, model, budget: str, target: str, db: Path, **fixed) -> dict:
    start = time.perf_counter()
    advice = batchlab.advise(model, "digits", target=target, budget=budget, db=db, **fixed)
    took = time.perf_counter() - start
    rec = advice.recommendation
    print(f"\n{label}: advise took {took:.0f} s (budget {budget}); recommends B={rec['batch_size']} "
          f"lr={rec['lr']} for {rec['epochs']} epochs; fitted B_crit {rec['critical_batch']['value']:.3g}, "
          f"local {rec['local_critical_batch']['value']}, B_simple {rec['b_simple']['value']:.3g}")
    for line in rec["warnings"] + [f"cut: {c}" for c in rec["cut"]]:
        print(f"  - {line}")
    table = advice.tables["per_batch"].set_index("batch_size")
    goal = parse_target(target)
    rows = []
    for name, b in (("recommended", rec["batch_size"]), ("B=32", 32), ("full batch", N_TRAIN)):
        if b in table.index and not math.isnan(table.loc[b, "lr"]):
            lr, epochs, source = float(table.loc[b, "lr"]), max(2 * math.ceil(table.loc[b, "epochs_high"]), 3), "advice"
        else:
            epochs = 200 if b == N_TRAIN else 60
            lr, source = tuned_lr(model, b, epochs, goal, db, "sgd", **fixed), "tuned here"
        if math.isnan(lr):
            rows.append({"setting": name, "batch_size": b, "note": "no lr of the grid reached the target"})
            continue
        rows.append({"setting": name, "lr_from": source, **validate(model, b, lr, epochs, goal, db, **fixed)})
    base = rows[0].get("seconds", math.nan)
    for row in rows:
        ratio = row.get("seconds", math.nan) / base
        row["ratio"] = ratio
        shown = (f"lr {row['lr']:.3g} ({row['lr_from']}): {row['seconds']:.3g} s [{row['low']:.3g}, "
                 f"{row['high']:.3g}], reached {row['reached']}, x{ratio:.2f}" if "seconds" in row else row["note"])
        print(f"  {row['setting']:<12} B={row['batch_size']:<5} {shown}")
    return {"label": label, "advise_seconds": took, "recommendation": rec, "validation": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="3m")
    parser.add_argument("--target", default="test_acc>=0.95")
    args = parser.parse_args()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "advise.db"
        out.append(one("digits CNN", "cnn", args.budget, args.target, db))
        out.append(one("PyTorch MLP 64-128-10", torch_mlp, args.budget, args.target, db))
    print(f"\nsaved {save('advise', plain(out))}")


if __name__ == "__main__":
    main()
