"""Time ``TorchMonitor`` (default instruments) in a plain PyTorch loop against the same loop bare.

Problem: scikit-learn's digits (1437 training rows of 8x8x1, batchlab's split), softmax
cross-entropy (batch mean), ``torch.optim.SGD`` lr 0.01 momentum 0.9, a new ``torch.randperm``
order each epoch, B = 32 and 256. Models, as in ``bench_torch.py`` (batchlab's ``mlp`` and
``cnn`` architectures as PyTorch modules):

- MLP: flatten -> Dense(50) relu -> Dense(10) (3,760 parameters).
- CNN: conv3x3(16) relu -> conv3x3(32) relu -> 2x2 mean pool -> flatten -> Dense(10).

Each timing is a whole run end to end: the model and (monitored) the ``TorchMonitor`` with its
store (a fresh SQLite file in a temporary folder) built, ``UPDATES`` optimizer updates, and
``close()`` (the last measurement and the final write); flushes every 500 updates, the default,
are inside it. Default instruments: grad_norm, update_norm, dist_init (no micro-batches, one
process: no noise estimate). Bare and monitored runs alternate in pairs, one thread, after a
warm-up; the overhead is the median over ``--repeat`` pairs (default 9; 3 with ``--quick``, and
fewer updates) of monitored minus bare, so that a shared machine's slow minutes, which hit
both runs of a pair, cancel; the bare time is the median of the bare runs.

Usage::

    python benchmarks/bench_monitor.py            # about 3 minutes on 2 cores
    python benchmarks/bench_monitor.py --quick    # about 25 seconds

Results are printed and written to benchmarks/results/bench_monitor.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness import paired_overhead, print_overheads, save, torch_module  # benchmarks/harness.py

LR, MOMENTUM = 0.01, 0.9
# Updates per timing (x 1/3 with --quick): runs of a few seconds, so the store's creation and
# final write (about 15 ms a run) weigh a few us an update, not tens.
CASES = (("mlp", 32, 5000), ("mlp", 256, 3000), ("cnn", 32, 1000), ("cnn", 256, 300))


def run(name: str, batch: int, updates: int, x, y, folder: Path | None) -> float:
    """Seconds for one run of ``updates`` updates; monitored when ``folder`` is given."""
    import torch

    from batchlab.monitor import TorchMonitor

    start = time.perf_counter()
    torch.manual_seed(0)
    model = torch_module(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    mon = None
    if folder is not None:
        mon = TorchMonitor(model, db=folder / f"{time.perf_counter_ns()}.db", name=f"{name}-{batch}",
                           settings=dict(optimizer=optimizer, batch_size=batch))
    done, n = 0, len(x)
    while done < updates:
        order = torch.randperm(n)
        for i in range(0, n, batch):
            rows = order[i:i + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(x[rows]), y[rows])
            loss.backward()
            if mon is not None:
                mon.update(batch_size=len(rows))
            optimizer.step()
            done += 1
            if done == updates:
                break
    if mon is not None:
        mon.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer updates and repeats")
    parser.add_argument("--repeat", type=int, default=None, help="timings per figure (median)")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 9)

    import torch

    from batchlab.data import load_dataset, resolve_data_config

    torch.set_num_threads(1)
    data = load_dataset(resolve_data_config("digits"))
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        folder = Path(tmp)
        for name, batch, updates in CASES:
            updates //= 3 if args.quick else 1
            run(name, batch, 20, x, y, None)  # warm-up: lazy imports, first-call costs
            run(name, batch, 20, x, y, folder)
            rows.append({"model": name, "batch_size": batch,
                         **paired_overhead(lambda: run(name, batch, updates, x, y, None),
                                           lambda: run(name, batch, updates, x, y, folder), repeat, updates)})
    print_overheads(f"TorchMonitor, default instruments, vs the bare loop (median of {repeat} pairs)", rows,
                    [("model", "model"), ("batch_size", "B")])
    print(f"wrote {save('bench_monitor', {'repeat': repeat, 'rows': rows})}")


if __name__ == "__main__":
    main()
