"""A digits MLP sweep (issue 4): B in 1, 2, ..., 1024 and full x 5 learning rates x 3 seeds,
30 epochs (180 runs), timed with each executor, against the same runs one by one in a plain
PyTorch loop.

PyTorch is measured on a subset and extrapolated (stated in the output): one run per batch
size for ``TORCH_EPOCHS`` epochs (steady epochs, after a warm-up epoch), scaled to 30 epochs
x 15 runs per batch size. batchlab's times are end to end with compilation; the compile
cache is filled by a first sweep, as on any repeated command.

Usage: python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import save  # benchmarks/harness.py

SIZES = "1:1024,full"
LRS = "0.003,0.01,0.03,0.1,0.3"
SEEDS, EPOCHS = 3, 30
TORCH_EPOCHS = 2


def time_sweep(executor: str, db: Path, spec) -> float:
    from batchlab.sweep.run import run_sweep

    start = time.perf_counter()
    run_sweep(spec, db, executor=executor, workers=2)
    return time.perf_counter() - start


def torch_seconds(sizes: list[int], runs_per_size: int) -> float:
    import numpy as np
    import torch

    from batchlab.data import load_dataset, resolve_data_config

    torch.set_num_threads(1)
    ds = load_dataset(resolve_data_config("digits"))
    x, y = torch.as_tensor(ds.x_train.reshape(ds.n_train, -1)), torch.as_tensor(ds.y_train).long()
    xt, yt = torch.as_tensor(ds.x_test.reshape(len(ds.y_test), -1)), torch.as_tensor(ds.y_test).long()
    total = 0.0
    for b in sizes:
        model = torch.nn.Sequential(torch.nn.Linear(64, 50), torch.nn.ReLU(), torch.nn.Linear(50, 10))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loss_fn = torch.nn.CrossEntropyLoss()
        times = []
        for _ in range(TORCH_EPOCHS + 1):
            start = time.perf_counter()
            order = torch.randperm(len(x))
            for i in range(0, len(x), b):
                rows = order[i:i + b]
                opt.zero_grad()
                loss_fn(model(x[rows]), y[rows]).backward()
                opt.step()
            with torch.no_grad():
                for xs, ys in ((x, y), (xt, yt)):
                    logits = model(xs)
                    _ = (loss_fn(logits, ys).item(), (logits.argmax(1) == ys).float().mean().item())
            times.append(time.perf_counter() - start)
        total += float(np.mean(times[1:])) * EPOCHS * runs_per_size
    return total


def main() -> None:
    from batchlab.sweep.spec import SweepSpec

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="B in 8..128, 2 lrs, 2 seeds, 5 epochs")
    args = parser.parse_args()
    spec = SweepSpec(name="bench", data="digits", batch_sizes=SIZES, lr=LRS, seeds=SEEDS, budget=f"epochs={EPOCHS}",
                     target="test_acc>=0.95")
    if args.quick:
        spec = SweepSpec(name="bench", data="digits", batch_sizes="8:128", lr="0.01,0.1", seeds=2, budget="epochs=5")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        time_sweep("local", tmp / "warmup.db", spec)  # fills the compile cache
        timings = {executor: time_sweep(executor, tmp / f"{executor}.db", spec)
                   for executor in ("local", "processes", "ray")}
    from batchlab.parsing import parse_batch_sizes

    sizes = [1437 if b == "full" else b for b in parse_batch_sizes(spec.batch_sizes)]
    runs = len(sizes) * len(spec.lr.split(",")) * spec.seeds
    torch_total = torch_seconds(sizes, runs // len(sizes))
    print(f"digits MLP sweep: {len(sizes)} batch sizes x {len(spec.lr.split(','))} lrs x {spec.seeds} seeds = "
          f"{runs} runs, {spec.budget}")
    for executor, seconds in timings.items():
        print(f"  batchlab {executor:<10} {seconds:8.1f} s   {torch_total / seconds:6.1f}x faster than PyTorch")
    print(f"  PyTorch one by one {torch_total:8.1f} s   (extrapolated from {TORCH_EPOCHS} epochs of one run per B)")
    print(f"  Ray overhead vs worker processes: {timings['ray'] - timings['processes']:+.1f} s; "
          f"vs in-process: {timings['ray'] - timings['local']:+.1f} s")
    save("bench_sweep", {"batchlab": timings, "torch": torch_total, "runs": runs})


if __name__ == "__main__":
    main()
