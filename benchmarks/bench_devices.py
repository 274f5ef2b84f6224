"""Throughput of one run split over devices (``--devices``) against the same run on one device.

For each batch size B, a fresh ``batchlab train`` process trains the MNIST MLP 784-256-256-10
(4,000 training rows, SGD, 3 seeds as one vmapped cohort) for a few epochs on 1 device and on
all devices, and reads the training time the run recorded (compilation excluded) to give
samples per second; the ratio all / one is the speed-up of splitting each batch.

On a CPU the devices are XLA's virtual ones (``--xla_force_host_platform_device_count``) sharing
the same cores: the numbers show the split costs little and changes nothing, not a speed-up.
On a machine with several GPUs the same command measures the real speed-up
(``benchmarks/gpu_check.sh`` runs it there).

Usage::

    python benchmarks/bench_devices.py                  # B in {256, 1024, 4000}
    python benchmarks/bench_devices.py --devices 4      # CPU: 4 virtual devices

Results are printed and written to benchmarks/results/bench_devices.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from harness import OtherCpu, report_other_cpu, save  # benchmarks/harness.py

SIZES = (256, 1024, 4000)
EPOCHS = 5


WORKER = """
import json, sys
import batchlab
b, devices, epochs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
result = batchlab.train("mnist", "mlp", hidden=(256, 256), batch_size=b, epochs=epochs, seeds=3, lr=0.05,
                        devices=devices if devices == "all" else int(devices), db=None)
s = result.summary
print(json.dumps({"seconds": float(s.train_seconds.max()), "samples": int(s.samples_seen.sum()),
                  "test_acc": float(s.test_acc.iloc[0])}))
"""


def one_run(batch_size: int, devices: int | str, virtual: int) -> dict:
    """Train once in a fresh process; samples per second of the recorded training time
    (compilation excluded)."""
    env = dict(os.environ)
    if virtual > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={virtual}"
    done = subprocess.run([sys.executable, "-c", WORKER, str(batch_size), str(devices), str(EPOCHS)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-2000:])
    run = json.loads(done.stdout.strip().splitlines()[-1])
    return {**run, "samples_per_second": run["samples"] / run["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=0, help="virtual CPU devices (0: the machine's own)")
    args = parser.parse_args()
    import jax  # this process's devices: the machine's own (virtual ones exist only in the workers)

    platform = jax.default_backend()
    count = args.devices or jax.device_count()
    virtual = args.devices if platform == "cpu" else 0
    results = []
    other = OtherCpu()
    for b in SIZES:
        one = one_run(b, 1, virtual)
        many = one_run(b, "all", virtual)
        results.append({"batch_size": b, "one": one, "all": many, "devices": count})
        ratio = many["samples_per_second"] / one["samples_per_second"]
        print(f"B={b:5d}  1 device {one['samples_per_second']:8.0f}/s  {count} devices "
              f"{many['samples_per_second']:8.0f}/s  ratio {ratio:.2f}  acc {one['test_acc']:.3f}/{many['test_acc']:.3f}")
    report_other_cpu({"the runs": other.measure()})
    print(f"saved {save('bench_devices', {'platform': platform, 'devices': count, 'results': results})}")


if __name__ == "__main__":
    main()
