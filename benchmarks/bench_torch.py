"""Time batchlab's torch backend against a user's own PyTorch loop, and against the JAX engine.

Problem: scikit-learn's digits (8x8x1 images, 1437 train / 360 test rows, batchlab's split),
softmax cross-entropy (batch mean), SGD lr 0.01 momentum 0.9, B = 32 (45 updates per epoch,
the last one partial), 30 epochs, reshuffled every epoch, a full eval-mode pass over train
and test after every epoch. Models, written as PyTorch modules with the architecture of
batchlab's built-in ``mlp`` and ``cnn``:

- MLP: flatten -> Dense(50) relu -> Dense(10).
- CNN: conv3x3(16) relu -> conv3x3(32) relu -> 2x2 mean pool -> flatten -> Dense(10).

Loops, timed end to end (model building included, imports and data loading excluded):

- plain: the user's own loop (tensors indexed by ``torch.randperm``, no DataLoader,
  ``torch.optim.SGD``), one thread, seeds one after another.
- torch backend: ``api.run_configs`` with the module adapted by ``adapt_torch``: one run, and
  16 seeds as one cohort (stacked and vmapped; ``engine/torch_backend.py``).
- JAX engine: ``batchlab.train("digits", "mlp"|"cnn", ...)``, each timing in a fresh process
  whose compiled programs come from batchlab's on-disk cache (filled by an earlier process).

The torch loops run in this process, interleaved, after a warm-up that takes torch's lazy
imports; each figure is the median of ``--repeat`` timings (default 3; 1 with ``--quick``).

Usage::

    python benchmarks/bench_torch.py            # both models, about 6 minutes on 2 cores
    python benchmarks/bench_torch.py --quick    # one timing each, about 2 minutes

Results are printed and written to benchmarks/results/bench_torch.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

from harness import OtherCpu, plain_torch_loop, report_other_cpu, run_worker, save, torch_module  # benchmarks/harness.py

EPOCHS, BATCH, SEEDS = 30, 32, 16
LR, MOMENTUM = 0.01, 0.9
MODELS = ("mlp", "cnn")


def digits():
    from batchlab.data import load_dataset, resolve_data_config

    return load_dataset(resolve_data_config("digits"))


# ----------------------------------------------------------------------------- torch loops

def plain_run(name: str, data, seed: int, epochs: int = EPOCHS) -> float:
    """The user's own loop; returns the final test accuracy."""
    import torch

    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test).long()
    torch.manual_seed(seed)
    return plain_torch_loop(torch_module(name), x_train, y_train, x_test, y_test, batch_size=BATCH, epochs=epochs,
                            lr=LR, momentum=MOMENTUM)


def backend_runs(name: str, data, seeds: int, epochs: int = EPOCHS):
    """The torch backend through ``api.run_configs`` (one cohort); returns (mean test acc, path)."""
    from batchlab.api import run_configs
    from batchlab.grid import build_configs
    from batchlab.config import DataConfig, ModelConfig
    import torch

    from batchlab.engine import torch_backend
    from batchlab.engine.torch_runs import should_stack
    from batchlab.models.adapters.torch import adapt_torch

    model = adapt_torch(lambda: torch_module(name), data.sample_shape, data.num_classes, name=name)
    configs = build_configs(DataConfig("digits"), data.n_train, ModelConfig(f"custom:{name}", fingerprint="bench"),
                            batch_size=BATCH, epochs=epochs, lr=LR, momentum=MOMENTUM, seeds=seeds)
    result = run_configs(configs, data, model)
    assert all(r.status == "finished" for r in result.runs)
    rows = torch.from_numpy(data.x_train[:2])
    stacked = seeds >= torch_backend.STACK_MIN_RUNS and should_stack(torch_module(name), rows)
    return statistics.mean(float(r.history["test_acc"][-1]) for r in result.runs), stacked


def time_torch(models: tuple[str, ...], repeat: int) -> dict:
    """Median seconds of each torch loop, timed in turn ``repeat`` times."""
    import torch

    torch.set_num_threads(1)  # single-threaded is fastest for these models on 2 cores
    data = digits()
    for name in models:  # warm-up: lazy imports and first-call costs of both loops
        plain_run(name, data, 0, epochs=1)
        backend_runs(name, data, 1, epochs=1)
        backend_runs(name, data, 3, epochs=1)
    cases = {(name, loop, runs): [] for name in models for loop in ("plain", "backend") for runs in (1, SEEDS)}
    accuracy, paths = {}, {}
    for rep in range(repeat):
        for (name, loop, runs), times in cases.items():
            start = time.perf_counter()
            if loop == "plain":
                acc = statistics.mean(plain_run(name, data, seed) for seed in range(runs))
            else:
                acc, stacked = backend_runs(name, data, runs)
                paths[(name, loop, runs)] = "stacked" if stacked else "one by one"
            times.append(time.perf_counter() - start)
            accuracy[(name, loop, runs)] = acc
            print(f"  {name} {loop} x{runs}: {times[-1]:.2f} s (repeat {rep + 1}/{repeat})", flush=True)
    return {key: {"seconds": statistics.median(times), "all_seconds": times, "test_acc": accuracy[key],
                  "path": paths.get(key, "")} for key, times in cases.items()}


# ------------------------------------------------------------------------------ JAX engine

def jax_worker(name: str, seeds: int) -> dict:
    import batchlab

    batchlab.data.load_dataset(batchlab.data.resolve_data_config("digits"))  # data loading: not timed
    start = time.perf_counter()
    result = batchlab.train("digits", name, batch_size=BATCH, epochs=EPOCHS, lr=LR, momentum=MOMENTUM, seeds=seeds)
    seconds = time.perf_counter() - start
    summary = result.summary
    return {"seconds": seconds, "compile": float(summary.compile_seconds.iloc[0]),
            "test_acc": float(summary.test_acc.mean())}


def time_jax(models: tuple[str, ...], repeat: int) -> dict:
    """Median seconds of ``batchlab.train`` per model and seed count, fresh processes, warm cache."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="batchlab-bench-cache-") as cache:
        for name in models:
            for runs in (1, SEEDS):
                def worker():
                    return run_worker(__file__, "--only", "jax", "--model", name, "--seeds", str(runs),
                                      env={"BATCHLAB_CACHE_DIR": cache})
                try:
                    worker()  # fills the cache
                    timings = sorted((worker() for _ in range(repeat)), key=lambda t: t["seconds"])
                except RuntimeError as exc:  # keep the torch timings when the JAX engine fails
                    print(f"  {name} JAX x{runs}: failed ({str(exc).strip().splitlines()[-1]})", flush=True)
                    out[(name, runs)] = None
                    continue
                out[(name, runs)] = {**timings[len(timings) // 2], "all_seconds": [t["seconds"] for t in timings]}
                print(f"  {name} JAX x{runs}: {out[(name, runs)]['seconds']:.2f} s", flush=True)
    return out


# ----------------------------------------------------------------------------------- main

def report(models, torch_times: dict, jax_times: dict) -> list[dict]:
    header = (f"{'model':<6}{'runs':>5}{'plain':>9}{'backend':>9}{'(path)':>13}{'plain/bl':>10}{'JAX':>8}"
              f"{'(compile)':>10}{'bl/JAX':>8}   test acc plain / backend / JAX")
    print("\n" + header + "\n" + "-" * len(header))
    rows = []
    for name in models:
        for runs in (1, SEEDS):
            plain, backend = torch_times[(name, "plain", runs)], torch_times[(name, "backend", runs)]
            jax = jax_times[(name, runs)] or {"seconds": float("nan"), "compile": float("nan"), "test_acc": float("nan")}
            row = {"model": name, "runs": runs, "plain": plain, "backend": backend, "jax": jax,
                   "plain_over_backend": plain["seconds"] / backend["seconds"],
                   "backend_over_jax": backend["seconds"] / jax["seconds"]}
            rows.append(row)
            print(f"{name:<6}{runs:>5}{plain['seconds']:>9.2f}{backend['seconds']:>9.2f}{backend['path']:>13}"
                  f"{row['plain_over_backend']:>9.2f}x{jax['seconds']:>8.2f}{jax['compile']:>10.2f}"
                  f"{row['backend_over_jax']:>7.1f}x   {plain['test_acc']:.3f} / {backend['test_acc']:.3f} / "
                  f"{jax['test_acc']:.3f}")
    print(f"""
Seconds, end to end (imports and data loading excluded), median of the repeats; {EPOCHS} epochs at B={BATCH}.
plain = the user's own PyTorch loop, runs in sequence; backend = batchlab's torch backend, one cohort ((path):
its runs stacked and vmapped, or one module after another: convolutions train one by one, engine/torch_runs.py);
plain/bl > 1 means the backend is faster (target: >= 1.0 for 1 run, > 1 for {SEEDS}).
JAX = batchlab.train with the built-in mlp/cnn, fresh process, compiled programs from the on-disk cache
((compile) = its compile_seconds: tracing and loading). bl/JAX = backend time / JAX time.
Test accuracy: final epoch, mean over runs (the initializations differ: torch's defaults vs he/glorot).""")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timing of each, instead of the median of 3")
    parser.add_argument("--repeat", type=int, help="timings per case, median kept (default 3, 1 with --quick)")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--only", choices=["jax"], help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only == "jax":
        print(json.dumps(jax_worker(args.model, args.seeds)))
        return

    models = tuple(m for m in args.models.split(",") if m in MODELS)
    repeat = args.repeat or (1 if args.quick else 3)
    phase = OtherCpu()
    print("torch loops ...", flush=True)
    torch_times = time_torch(models, repeat)
    contention = {"torch timings": phase.measure()}
    phase = OtherCpu()
    print("JAX engine ...", flush=True)
    jax_times = time_jax(models, repeat)
    contention["JAX timings"] = phase.measure()
    rows = report(models, torch_times, jax_times)
    print()
    report_other_cpu(contention)
    path = save("bench_torch", {"epochs": EPOCHS, "batch_size": BATCH, "seeds": SEEDS, "repeat": repeat,
                                "other_cpu": contention, "rows": rows})
    print(f"\nWritten to {path}")


if __name__ == "__main__":
    main()
