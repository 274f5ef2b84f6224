"""Shen's gradient-norm study at one checkpoint: batchlab vs a naive PyTorch loop.

Digits MLP 64-50-10, 1437 training rows, batch sizes 1, 2, ..., 1024, 1000 random batches
each (without replacement), norms for the batch-sum and batch-mean loss.
- batchlab: ``studies.gradient_noise.measure_checkpoint`` (factorized Gram matrix + exact
  Monte-Carlo over it). Steady state = the second call; compile time = first - second.
- PyTorch: one forward/backward per trial (the loop a user would write), one thread; the
  mean gradient norm is the sum norm / B. Measured on ``TORCH_TRIALS`` trials per B and
  scaled to 1000 (stated in the output).

Usage: python benchmarks/bench_noise.py
"""

from __future__ import annotations

import time

import numpy as np

from harness import save  # benchmarks/harness.py

TRIALS = 1000
TORCH_TRIALS = 100
SIZES = [2 ** i for i in range(11)]


def checkpoint():
    import batchlab
    from batchlab.api import prepare, run_configs

    configs, dataset, net = prepare("digits", "mlp", batch_size=64, epochs=2, lr=0.01, momentum=0.0, seeds=1,
                                    hidden=(50,), activation="relu", init="he_uniform", dropout=0.0,
                                    standardize=None, test_fraction=0.2, label="label")
    run = run_configs(configs, dataset, net, checkpoints=(2,)).runs[0]
    del batchlab
    return net, run.checkpoints[2], dataset


def time_batchlab(net, params, dataset) -> tuple[float, float]:
    import jax.numpy as jnp

    from batchlab.studies.gradient_noise import measure_checkpoint

    x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        measure_checkpoint(net, params, x, y, SIZES, trials=TRIALS, sharpness=False)
        times.append(time.perf_counter() - start)
    return times[1], times[0] - times[1]


def time_torch(params, dataset) -> float:
    import torch

    torch.set_num_threads(1)
    x = torch.as_tensor(dataset.x_train.reshape(len(dataset.x_train), -1))
    y = torch.as_tensor(dataset.y_train).long()
    model = torch.nn.Sequential(torch.nn.Linear(64, 50), torch.nn.ReLU(), torch.nn.Linear(50, 10))
    with torch.no_grad():
        for layer, p in zip((model[0], model[2]), params):
            layer.weight.copy_(torch.as_tensor(np.asarray(p["w"]).T))
            layer.bias.copy_(torch.as_tensor(np.asarray(p["b"])))
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    start = time.perf_counter()
    for b in SIZES:
        for _ in range(TORCH_TRIALS):
            rows = torch.randperm(len(x))[:b]
            model.zero_grad()
            loss_fn(model(x[rows]), y[rows]).backward()
            norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
            _ = (norm.item(), norm.item() / b)  # batch-sum and batch-mean norms
    return (time.perf_counter() - start) * TRIALS / TORCH_TRIALS


def main() -> None:
    net, params, dataset = checkpoint()
    steady, compile_seconds = time_batchlab(net, params, dataset)
    torch_seconds = time_torch(params, dataset)
    print(f"one checkpoint, {len(SIZES)} batch sizes x {TRIALS} trials, digits MLP (N={dataset.n_train}):")
    print(f"  batchlab  {steady:.3f} s steady state (+{compile_seconds:.2f} s compilation the first time)")
    print(f"  PyTorch   {torch_seconds:.2f} s (measured {TORCH_TRIALS} trials per B, scaled to {TRIALS})")
    print(f"  ratio     {torch_seconds / steady:.1f}x faster (target 10x); "
          f"with compilation {torch_seconds / (steady + compile_seconds):.1f}x")
    save("bench_noise", {"batchlab_seconds": steady, "compile_seconds": compile_seconds, "torch_seconds": torch_seconds})


if __name__ == "__main__":
    main()
