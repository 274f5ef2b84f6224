"""Time batchlab against the loops a user would otherwise write, on Brownlee's blobs problem.

Same problem everywhere: blobs (500 train / 500 test), MLP 2-50(relu, he_uniform)-3
(glorot_uniform output, zero biases), softmax cross-entropy (batch mean), SGD lr 0.01
momentum 0.9, 200 epochs, reshuffled every epoch, last partial batch kept, and a full
evaluation of train and test loss/accuracy after every epoch.

- batchlab: ``batchlab.train(...)``, seeds as one vmapped cohort, nothing stored. Timed end to
  end (compilation included), in a fresh process, "cold" (compile cache off) and "warm"
  (compiled programs read from batchlab's on-disk cache, as on any repeated command).
- PyTorch: a plain loop (tensors, randperm per epoch, no DataLoader), one thread (fastest
  for this model on 2 cores), seeds one after another. Long configurations are measured on
  fewer seeds and scaled linearly; the table marks them.
- Keras 3 ``model.fit`` (JAX backend) when keras is installed: the first epoch (compilation
  included) plus 199 times the median later epoch, one seed, times the seeds (marked).

Usage: python benchmarks/bench_train.py [--quick]   (results also in benchmarks/results/)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPOCHS = 200
LR, MOMENTUM = 0.01, 0.9
TARGETS = {(1, 1): 10.0, (1, 16): 50.0, (32, 16): 6.0}  # (B, seeds) -> required torch/batchlab ratio
HERE = Path(__file__).resolve().parent


def blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=2)
    return x[:500].astype(np.float32), y[:500], x[500:].astype(np.float32), y[500:]


# ------------------------------------------------------------------------------- batchlab

def batchlab_worker(configs: list[tuple[int, int]]) -> None:
    """Runs in a fresh process (cache setting from the environment); prints JSON timings."""
    import batchlab

    out = []
    for b, seeds in configs:
        start = time.perf_counter()
        result = batchlab.train("blobs", "mlp", batch_size=b, epochs=EPOCHS, lr=LR, momentum=MOMENTUM, seeds=seeds)
        total = time.perf_counter() - start
        run = result.runs[0]
        out.append({"batch_size": b, "seeds": seeds, "seconds": total, "compile": run.compile_seconds,
                    "train": run.train_seconds, "test_acc": float(result.summary.test_acc.mean())})
    print(json.dumps(out))


def time_batchlab(configs, cache: str) -> list[dict]:
    env = dict(os.environ, BATCHLAB_CACHE_DIR=cache)
    command = [sys.executable, __file__, "--worker", json.dumps(configs)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------- PyTorch

def torch_run(b: int, seed: int, epochs: int) -> tuple[float, float]:
    """One run of the plain PyTorch loop; returns (seconds, final test accuracy)."""
    import torch

    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in blobs())
    y_train, y_test = y_train.long(), y_test.long()
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.ReLU(), torch.nn.Linear(50, 3))
    with torch.no_grad():  # Keras' he_uniform / glorot_uniform, zero biases
        bound = (6 / 2) ** 0.5
        model[0].weight.uniform_(-bound, bound)
        torch.nn.init.xavier_uniform_(model[2].weight)
        model[0].bias.zero_()
        model[2].bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(x_train)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, b):
            rows = order[i:i + b]
            opt.zero_grad()
            loss = loss_fn(model(x_train[rows]), y_train[rows])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            train_logits, test_logits = model(x_train), model(x_test)
            metrics = (loss_fn(train_logits, y_train).item(), (train_logits.argmax(1) == y_train).float().mean().item(),
                       loss_fn(test_logits, y_test).item(), (test_logits.argmax(1) == y_test).float().mean().item())
    return time.perf_counter() - start, metrics[3]


_torch_runs: dict[int, list[tuple[float, float]]] = {}  # batch size -> measured (seconds, test acc) per seed


def time_torch(b: int, seeds: int, budget_runs: int) -> dict:
    """Measure min(seeds, budget_runs) runs (reusing earlier ones); scale linearly to ``seeds`` runs."""
    measured = min(seeds, budget_runs)
    runs = _torch_runs.setdefault(b, [])
    while len(runs) < measured:
        runs.append(torch_run(b, len(runs), EPOCHS))
    used = runs[:measured]
    seconds = sum(r[0] for r in used) * seeds / measured
    return {"seconds": seconds, "test_acc": float(np.mean([r[1] for r in used])),
            "note": "" if measured == seeds else f"measured {measured} of {seeds} runs, scaled"}


# ---------------------------------------------------------------------------------- Keras

KERAS_SNIPPET = """
import json, sys, time
import numpy as np
import keras
sys.path.insert(0, {here!r})
from bench_train import blobs
x_train, y_train, x_test, y_test = blobs()

class Clock(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        ends.append(time.perf_counter())

keras.utils.set_random_seed(0)
ends = []
start = time.perf_counter()
model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(50, activation="relu", kernel_initializer="he_uniform"),
                          keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer=keras.optimizers.SGD(learning_rate={lr}, momentum={momentum}),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, validation_data=(x_test, y_test), epochs={epochs}, batch_size={b}, verbose=0,
          callbacks=[Clock()])
first = ends[0] - start
steady = float(np.median(np.diff(ends)))
print(json.dumps({{"first_epoch": first, "steady_epoch": steady}}))
"""


def time_keras(b: int, seeds: int, epochs: int) -> dict | None:
    """Keras 3 ``model.fit`` (JAX backend): the first epoch (with compilation) plus 199 times the
    median later epoch, for one seed, times ``seeds``."""
    import importlib.util

    if importlib.util.find_spec("keras") is None:
        return None
    code = KERAS_SNIPPET.format(here=str(HERE), b=b, epochs=epochs, lr=LR, momentum=MOMENTUM)
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, KERAS_BACKEND="jax"),
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"seconds": float("nan"), "note": "keras failed: " + done.stderr.strip().splitlines()[-1]}
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    per_run = timing["first_epoch"] + (EPOCHS - 1) * timing["steady_epoch"]
    return {"seconds": per_run * seeds, "note": f"{epochs} epochs of 1 seed measured, scaled"}


# ----------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B=32 only, for a fast smoke check")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        batchlab_worker([tuple(c) for c in json.loads(args.worker)])
        return
    configs = [(32, 1), (32, 16)] if args.quick else [(1, 1), (1, 16), (32, 1), (32, 16), (500, 1), (500, 16)]

    cold = time_batchlab(configs, "off")
    with tempfile.TemporaryDirectory() as cache:
        time_batchlab(configs, cache)  # fills the cache
        warm = time_batchlab(configs, cache)
    rows = []
    for (b, seeds), c, w in zip(configs, cold, warm):
        # PyTorch at B=1 takes ~17 s per run: measure one run there, all runs elsewhere.
        torch_result = time_torch(b, seeds, budget_runs=1 if b == 1 else (2 if args.quick else seeds))
        keras_result = time_keras(b, seeds, epochs=4 if b == 1 else 10) if not args.quick else None
        rows.append({"batch_size": b, "seeds": seeds, "batchlab_cold": c, "batchlab_warm": w,
                     "torch": torch_result, "keras": keras_result})
    report(rows)


def report(rows: list[dict]) -> None:
    header = (f"{'config':<15}{'batchlab cold':>14}{'(compile)':>10}{'warm':>8}{'torch':>9}{'keras':>9}"
              f"{'torch/cold':>12}{'torch/warm':>12}{'target':>8}  test acc batchlab/torch  notes")
    print(header)
    print("-" * len(header))
    for row in rows:
        b, seeds = row["batch_size"], row["seeds"]
        cold, warm, torch, keras = row["batchlab_cold"], row["batchlab_warm"], row["torch"], row["keras"]
        target = TARGETS.get((b, seeds))
        label = f"B={b}, {seeds} seed" + ("s" if seeds > 1 else "")
        keras_text = f"{keras['seconds']:.1f}s" if keras else "-"
        target_text = f"{target:.0f}x" if target else "-"
        notes = "; ".join(n for n in (torch["note"] and "torch: " + torch["note"],
                                      keras and keras["note"] and "keras: " + keras["note"]) if n)
        print(f"{label:<15}{cold['seconds']:>13.2f}s{cold['compile']:>9.2f}s{warm['seconds']:>7.2f}s"
              f"{torch['seconds']:>8.1f}s{keras_text:>9}{torch['seconds'] / cold['seconds']:>11.1f}x"
              f"{torch['seconds'] / warm['seconds']:>11.1f}x{target_text:>8}  "
              f"{cold['test_acc']:.3f}/{torch['test_acc']:.3f}  {notes}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_train.json").write_text(json.dumps(rows, indent=2))
    print("\ncold: compile cache off; warm: compiled programs from batchlab's on-disk cache. Times are end "
          f"to end (compilation included), without Python imports. Results: {out / 'bench_train.json'}")


if __name__ == "__main__":
    main()
