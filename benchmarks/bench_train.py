"""Time batchlab against the training loops a user would otherwise write, on Brownlee's blobs problem.

The problem is the same in every loop: ``make_blobs(1000, centers=3, n_features=2,
cluster_std=2, random_state=2)``, rows 0-499 train and 500-999 test; MLP 2 -> 50 (relu,
he_uniform) -> 3 (glorot_uniform), zero biases; softmax cross-entropy (batch mean); SGD lr 0.01
momentum 0.9; 200 epochs, reshuffled every epoch, last partial batch kept; after every epoch a
full evaluation (eval mode) of train and test loss and accuracy.

Loops, each timed end to end (setup and compilation included, Python imports and data
generation excluded):

- batchlab: ``batchlab.train(...)``; S seeds train as one vmapped cohort, nothing is stored.
  Every timing is a fresh process (``--only batchlab`` worker mode), "cold"
  (``BATCHLAB_CACHE_DIR=off``: everything compiled) and "warm" (compiled programs read from
  batchlab's on-disk cache, filled by an earlier process, as on any repeated command); the
  median of 3 processes is kept, as compile times vary by ~25%.
- PyTorch: a plain loop (tensors, ``torch.randperm`` per epoch, no DataLoader), one thread
  (fastest for this tiny model on 2 cores), seeds one after another, in this process after a
  one-epoch warm-up run that takes torch's lazy imports. Where a configuration would take
  minutes (B=1 x 16 seeds), fewer runs are measured and the time is scaled; the table says so.
- Keras 3 ``model.fit`` on the JAX backend, if keras is installed (``--only keras`` worker
  mode): one seed is measured, for 10 epochs at B=1 and all 200 elsewhere, and extrapolated
  to 200 epochs and to 16 seeds; the table says so.

Usage::

    python benchmarks/bench_train.py            # B in {1, 32, 500} x seeds in {1, 16}, several minutes
    python benchmarks/bench_train.py --quick    # B=32 only, about a minute

Results are printed and written to benchmarks/results/bench_train.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time

import numpy as np

from harness import OtherCpu, plain_torch_loop, report_other_cpu, run_worker, save  # benchmarks/harness.py

EPOCHS = 200
LR, MOMENTUM = 0.01, 0.9
HIDDEN = 50
# The targets, (batch size, seeds) -> required torch/batchlab time ratio.
TARGETS = {(1, 1): 10.0, (1, 16): 50.0, (32, 16): 6.0}
# batchlab turns XLA's CPU threading off (engine/runtime.py); Keras-on-JAX gets the same flags
# so that both JAX loops run under the same threading.
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false"


def blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Brownlee's blobs: (x_train, y_train, x_test, y_test), float32 features, int64 labels."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=2)
    x = x.astype(np.float32)
    return x[:500], y[:500], x[500:], y[500:]


# ------------------------------------------------------------------------------- batchlab

def batchlab_worker(batch_size: int, seeds: int) -> dict:
    """One ``batchlab.train`` call, timed; the cache setting comes from the environment."""
    import batchlab
    import batchlab.api  # noqa: F401  (``batchlab.train`` imports JAX and the engine on first use: not timed)
    import batchlab.engine.jax_backend  # noqa: F401  (the JAX engine itself, loaded when a cohort first trains)

    start = time.perf_counter()
    result = batchlab.train("blobs", "mlp", batch_size=batch_size, epochs=EPOCHS, lr=LR, momentum=MOMENTUM,
                            seeds=seeds)
    seconds = time.perf_counter() - start
    summary = result.summary
    assert list(summary.seed) == list(range(seeds)) and (summary.epochs_done == EPOCHS).all(), summary
    # One cohort, so every run reports the same compile and train times.
    compile_s, train_s = float(summary.compile_seconds.iloc[0]), float(summary.train_seconds.iloc[0])
    return {"seconds": seconds, "compile": compile_s, "train": train_s, "other": seconds - compile_s - train_s,
            "test_acc": float(summary.test_acc.mean()), "status": summary.status.value_counts().to_dict()}


def time_batchlab(configs: list[tuple[int, int]], repeat: int) -> dict[tuple[int, int], dict]:
    """Cold and warm times of every configuration, each call in a fresh process. Compile times
    vary by ~25% from process to process, so each is repeated and the median run is kept."""
    def worker(b: int, seeds: int, cache: str) -> dict:
        return run_worker(__file__, "--only", "batchlab", "--cache", cache, "--batch-size", str(b),
                          "--seeds", str(seeds))

    def median_run(runs: list[dict]) -> dict:
        ordered = sorted(runs, key=lambda run: run["seconds"])
        return {**ordered[len(ordered) // 2], "all_seconds": [run["seconds"] for run in runs]}

    times = {config: {"cold": median_run([worker(*config, "off") for _ in range(repeat)])} for config in configs}
    with tempfile.TemporaryDirectory(prefix="batchlab-bench-cache-") as cache:
        for config in configs:
            worker(*config, cache)  # fills the cache
            times[config]["warm"] = median_run([worker(*config, cache) for _ in range(repeat)])
    return times


# -------------------------------------------------------------------------------- PyTorch

def torch_run(batch_size: int, seed: int, epochs: int) -> tuple[float, float]:
    """One run of the plain PyTorch loop; returns (seconds, final test accuracy)."""
    import torch

    x_train, y_train, x_test, y_test = (torch.as_tensor(a) for a in blobs())  # data: not timed
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 3))
    with torch.no_grad():
        # Keras' he_uniform is uniform(+-sqrt(6 / fan_in)); PyTorch's default Linear init differs.
        bound = (6.0 / model[0].in_features) ** 0.5
        model[0].weight.uniform_(-bound, bound)
        torch.nn.init.xavier_uniform_(model[2].weight)  # = Keras' glorot_uniform
        model[0].bias.zero_()
        model[2].bias.zero_()
    accuracy = plain_torch_loop(model, x_train, y_train, x_test, y_test, batch_size=batch_size, epochs=epochs,
                                lr=LR, momentum=MOMENTUM)
    return time.perf_counter() - start, accuracy


class TorchTimer:
    """Measured PyTorch runs, kept so a 1-seed configuration reuses seed 0 of the 16-seed one."""

    def __init__(self):
        import torch

        torch.set_num_threads(1)  # single-threaded is fastest for this model on 2 cores
        # The first run in a process pays ~1.5 s of lazy imports (torch._dynamo, sympy, ... via the
        # optimizer); imports are not timed, so a one-epoch run takes them first.
        torch_run(32, 0, 1)
        self.runs: dict[tuple[int, int], list[tuple[float, float]]] = {}  # (B, epochs) -> per seed

    def time(self, batch_size: int, seeds: int, measure_runs: int, measure_epochs: int = EPOCHS) -> dict:
        """Measure ``measure_runs`` runs of ``measure_epochs`` epochs; scale linearly to seeds x 200 epochs
        (PyTorch compiles nothing, so its time is linear in runs and epochs)."""
        runs = self.runs.setdefault((batch_size, measure_epochs), [])
        while len(runs) < measure_runs:
            runs.append(torch_run(batch_size, len(runs), measure_epochs))
        used = runs[:measure_runs]
        measured = sum(seconds for seconds, _ in used)
        scale = (seeds / measure_runs) * (EPOCHS / measure_epochs)
        note = ("" if scale == 1 else
                f"extrapolated x{scale:g} from {measure_runs} run(s) x {measure_epochs} epochs ({measured:.1f} s)")
        return {"seconds": measured * scale, "measured_seconds": measured, "extrapolated": scale != 1,
                "note": note, "test_acc": float(np.mean([acc for _, acc in used])),
                "acc_epochs": measure_epochs}


# ---------------------------------------------------------------------------------- Keras

def keras_worker(batch_size: int, epochs: int) -> dict:
    """One seed of Keras ``fit`` for ``epochs`` epochs; returns the wall time at each epoch end."""
    import keras

    x_train, y_train, x_test, y_test = blobs()

    class EvalAndClock(keras.callbacks.Callback):
        """Full eval-mode pass over the training set (fit only reports running averages), then a timestamp."""

        def __init__(self):
            super().__init__()
            self.ends: list[float] = []

        def on_epoch_end(self, epoch, logs=None):
            self.model.evaluate(x_train, y_train, batch_size=len(x_train), verbose=0)
            self.ends.append(time.perf_counter() - start)

    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(HIDDEN, activation="relu", kernel_initializer="he_uniform"),
        keras.layers.Dense(3),  # glorot_uniform kernel and zero biases are Keras' defaults
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    clock = EvalAndClock()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                        validation_data=(x_test, y_test), validation_batch_size=len(x_test),
                        callbacks=[clock], verbose=0)
    return {"epoch_ends": clock.ends, "test_acc": float(history.history["val_accuracy"][-1])}


def time_keras(batch_size: int, measure_epochs: int) -> dict | None:
    """Keras time of one seed x 200 epochs: measured when ``measure_epochs`` is 200; otherwise the
    first epoch (model build and compilation) as measured plus 199 epochs at the mean measured
    time of the later ones. None when keras is not installed."""
    if importlib.util.find_spec("keras") is None:
        return None
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": os.environ.get("XLA_FLAGS", SINGLE_THREAD_XLA)}
    out = run_worker(__file__, "--only", "keras", "--batch-size", str(batch_size), "--epochs", str(measure_epochs),
                     env=env)
    ends = out["epoch_ends"]
    first, per_epoch = ends[0], (ends[-1] - ends[0]) / (len(ends) - 1)
    extrapolated = measure_epochs != EPOCHS
    note = (f"1 seed x {measure_epochs} epochs measured (first epoch {first:.2f} s, then "
            f"{per_epoch * 1000:.1f} ms/epoch), extrapolated to {EPOCHS} epochs") if extrapolated else ""
    return {"seconds": first + per_epoch * (EPOCHS - 1) if extrapolated else ends[-1], "extrapolated": extrapolated,
            "note": note, "first_epoch": first, "per_epoch": per_epoch, "test_acc": out["test_acc"],
            "acc_epochs": measure_epochs}


def scale_keras(one_seed: dict | None, seeds: int) -> dict | None:
    """Keras time of ``seeds`` sequential runs from one measured seed (each new model compiles again)."""
    if one_seed is None or seeds == 1:
        return one_seed
    note = one_seed["note"] or f"1 seed x {EPOCHS} epochs measured ({one_seed['seconds']:.1f} s)"
    return {**one_seed, "seconds": seeds * one_seed["seconds"], "extrapolated": True, "note": f"{note}, x{seeds} seeds"}


# ----------------------------------------------------------------------------------- main

def plan(quick: bool) -> list[dict]:
    """Configurations and how much of each baseline to measure."""
    if quick:
        # One full-length PyTorch run (~2 s) rather than 16 shorter ones: as quick, and its final
        # accuracy still checks that the loops agree.
        return [{"batch_size": 32, "seeds": s, "torch_runs": 1, "torch_epochs": EPOCHS, "keras_epochs": 10}
                for s in (1, 16)]
    rows = []
    for b in (1, 32, 500):
        for s in (1, 16):
            # A PyTorch run at B=1 takes ~45 s on 2 cores, so 16 seeds are scaled from one run;
            # the other batch sizes are measured in full. Keras is always one seed (seeds are
            # scaled): at B=1 a 200-epoch run takes ~50 s, so it gets 10 epochs there.
            rows.append({"batch_size": b, "seeds": s, "torch_runs": 1 if b == 1 else s, "torch_epochs": EPOCHS,
                         "keras_epochs": 10 if b == 1 else EPOCHS})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="B=32 only, one process per batchlab timing, baselines from one seed: a smoke check")
    parser.add_argument("--repeat", type=int, help="fresh batchlab processes per timing, median kept "
                        "(default 3, 1 with --quick)")
    parser.add_argument("--only", choices=["batchlab", "keras"], help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--cache", help="worker mode: BATCHLAB_CACHE_DIR ('off' or a directory)")
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.only == "batchlab":
        if args.cache:
            os.environ["BATCHLAB_CACHE_DIR"] = args.cache  # before batchlab is imported
        print(json.dumps(batchlab_worker(args.batch_size, args.seeds)))
        return
    if args.only == "keras":
        print(json.dumps(keras_worker(args.batch_size, args.epochs)))
        return

    rows = plan(args.quick)
    repeat = args.repeat or (1 if args.quick else 3)
    print(f"batchlab: {2 * repeat * len(rows)} timed worker processes (+{len(rows)} to fill the cache) ...", flush=True)
    phase = OtherCpu()
    batchlab_times = time_batchlab([(r["batch_size"], r["seeds"]) for r in rows], repeat)
    contention = {"batchlab timings": phase.measure()}
    phase = OtherCpu()
    results = time_baselines(rows, batchlab_times)
    contention["baseline timings"] = phase.measure()

    report(results, repeat)
    breakdown(results)
    print()
    report_other_cpu(contention)
    path = save("bench_train", {"quick": args.quick, "epochs": EPOCHS, "repeat": repeat, "other_cpu": contention,
                                "rows": results})
    print(f"\nWritten to {path}")


def time_baselines(rows: list[dict], batchlab_times: dict[tuple[int, int], dict]) -> list[dict]:
    """PyTorch and Keras times for every configuration, next to batchlab's."""
    torch_timer = TorchTimer()
    keras_seen: dict[tuple[int, int], dict | None] = {}  # (B, epochs) -> one measured seed
    results = []
    for r in rows:
        b, seeds = r["batch_size"], r["seeds"]
        print(f"baselines at B={b}, {seeds} seed(s) ...", flush=True)
        torch_result = torch_timer.time(b, seeds, r["torch_runs"], r["torch_epochs"])
        key = (b, r["keras_epochs"])
        if key not in keras_seen:
            keras_seen[key] = time_keras(b, r["keras_epochs"])
        results.append({"batch_size": b, "seeds": seeds, **batchlab_times[(b, seeds)], "torch": torch_result,
                        "keras": scale_keras(keras_seen[key], seeds), "target": TARGETS.get((b, seeds))})
    return results


# --------------------------------------------------------------------------------- report

def report(results: list[dict], repeat: int) -> None:
    """The main table, then what each column means and every extrapolation."""
    header = (f"{'config':<14}{'bl cold':>9}{'(compile)':>10}{'bl warm':>9}{'(compile)':>10}{'torch':>10}{'keras':>10}"
              f"{'torch/cold':>11}{'torch/warm':>11}{'target':>8}{'met c/w':>9}   test acc bl / torch / keras")
    print("\n" + header + "\n" + "-" * len(header))
    notes = []
    for row in results:
        label = f"B={row['batch_size']} x{row['seeds']}"
        cold, warm, torch, keras = row["cold"], row["warm"], row["torch"], row["keras"]
        row["ratio_cold"] = ratio_cold = torch["seconds"] / cold["seconds"]
        row["ratio_warm"] = ratio_warm = torch["seconds"] / warm["seconds"]
        target = row["target"]
        met = f"{yes_no(ratio_cold >= target)}/{yes_no(ratio_warm >= target)}" if target else "-"
        print(f"{label:<14}{cold['seconds']:>9.2f}{cold['compile']:>10.2f}{warm['seconds']:>9.2f}"
              f"{warm['compile']:>10.2f}{seconds_text(torch):>10}{seconds_text(keras):>10}"
              f"{ratio_cold:>10.1f}x{ratio_warm:>10.1f}x{(f'{target:.0f}x' if target else '-'):>8}{met:>9}   "
              f"{cold['test_acc']:.3f} / {acc_text(torch)} / {acc_text(keras)}")
        notes += [f"  {label} {name}: {result['note']}" for name, result in (("torch", torch), ("keras", keras))
                  if result is not None and result["note"]]
        if set(cold["status"]) != {"finished"}:
            print(f"  note: batchlab run status {cold['status']}")
    print(f"""
Times in seconds, end to end: setup and compilation included, Python imports and data generation excluded.
bl cold = batchlab in a fresh process with its compile cache off (BATCHLAB_CACHE_DIR=off); median of {repeat}.
bl warm = batchlab in a fresh process whose compiled programs come from batchlab's on-disk cache
          (filled by an earlier process), as on any repeated command; median of {repeat}.
(compile) = batchlab's compile_seconds (with a warm cache: tracing, lowering and loading the programs).
torch = plain PyTorch loop, 1 thread (fastest here), seeds in sequence, lazy imports taken before timing.
keras = Keras 3 model.fit, JAX backend (XLA single-threaded like batchlab), seeds in sequence; its first
        epoch includes its compilation.
Test accuracy: final epoch, mean over seeds (torch, keras: over the measured runs; "(n ep)": after n epochs).
* = extrapolated, not measured in full:""")
    print("\n".join(notes) if notes else "  (nothing)")
    if all(row["keras"] is None for row in results):
        print("keras not installed, skipped")


def yes_no(flag: bool) -> str:
    return "yes" if flag else "NO"


def seconds_text(result: dict | None) -> str:
    if result is None:
        return "-"
    return f"{result['seconds']:.1f}" + ("*" if result["extrapolated"] else "")


def breakdown(results: list[dict]) -> None:
    """Where batchlab's end-to-end time goes, from its own compile_seconds and train_seconds."""
    print("\nbatchlab time split (s): compile = compile_seconds, train = train_seconds (all epochs and "
          "evaluations), other = the rest of train() (data, setup, results)")
    print(f"{'config':<14}{'cold: compile':>14}{'train':>8}{'other':>8}{'warm: compile':>15}{'train':>8}{'other':>8}")
    for row in results:
        cold, warm = row["cold"], row["warm"]
        print(f"{'B=%d x%d' % (row['batch_size'], row['seeds']):<14}{cold['compile']:>14.2f}{cold['train']:>8.2f}"
              f"{cold['other']:>8.2f}{warm['compile']:>15.2f}{warm['train']:>8.2f}{warm['other']:>8.2f}")


def acc_text(result: dict | None) -> str:
    if result is None:
        return "-"
    text = f"{result['test_acc']:.3f}"
    return text if result["acc_epochs"] == EPOCHS else f"{text} ({result['acc_epochs']} ep)"


if __name__ == "__main__":
    main()
