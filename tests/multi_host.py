"""One of two processes of tests/test_multi_device.py's multi-host test: 2 CPU devices each, one
JAX runtime over both (coordinator and collectives on 127.0.0.1); trains with every device and
prints one JSON line: the losses, the device counts and the remote address of every open
connection of this process."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"  # the suite's, and 2 devices
from batchlab.runtime import join_processes  # noqa: E402

join_processes(f"127.0.0.1:{sys.argv[2]}", 2, int(sys.argv[1]), loopback=True)

import jax  # noqa: E402
import psutil  # noqa: E402

import batchlab  # noqa: E402

run = batchlab.train("iris", "mlp", devices="all", batch_size=32, epochs=3, lr=0.1, db=None).runs[0]
remote = sorted({c.raddr.ip for c in psutil.Process().net_connections(kind="inet") if c.raddr})
print(json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(),
                  "loss": [float(v) for v in run.history["train_loss"]], "remote": remote}))
sys.stdout.flush()
