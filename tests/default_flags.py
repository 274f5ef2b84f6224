"""Run by tests/test_xla_defaults.py in a process of its own whose environment has no XLA_FLAGS,
so batchlab sets its own (the suite's processes compile with more flags: tests/conftest.py);
prints one JSON object of what the tests check."""

import json
import os

import jax
import numpy as np

from batchlab import budget
from batchlab.api import prepare
from batchlab.engine.jax_backend import train_cohort
from batchlab.engine.programs import EpochShape
from batchlab.runtime import XLA_FLAGS

# The suite's test_xla_defaults.py trains the same runs with its own flags.
BATCH_SIZE = 64
SETTINGS = dict(batch_size=BATCH_SIZE, hidden=(16,), epochs=2, lr=0.1, momentum=0.9, seeds=2, dropout=0.3,
                instruments="full")

if __name__ == "__main__":
    out = {"flags": os.environ.get("XLA_FLAGS"), "batchlab_flags": XLA_FLAGS}
    configs, dataset, net = prepare("digits", "mlp", **SETTINGS)
    steps = budget.steps_per_epoch(dataset.n_train, BATCH_SIZE)
    # An epoch program that evaluates its runs itself (XLA's default code generation) and the
    # separate evaluation program (compiled with ``programs.EVAL_OPTIONS``): the same bits.
    apart, inside = (train_cohort(configs, dataset, net, shapes={BATCH_SIZE: EpochShape(BATCH_SIZE, steps,
                                                                                        evaluates=evaluates)})
                     for evaluates in (False, True))
    out["evaluates_same_bits"] = (
        all(np.array_equal(a.history[k], b.history[k])
            for a, b in zip(apart, inside) for k in ("train_loss", "train_acc", "test_loss", "test_acc"))
        and all(np.array_equal(x, y) for a, b in zip(apart, inside)
                for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))))
    out["runs"] = [{"history": {k: [float(v) for v in run.history[k]] for k in ("train_loss", "test_acc")},
                    "noise_scale": [float(v) for v in run.steps["noise_scale"]],
                    "params": [float(np.linalg.norm(leaf)) for leaf in jax.tree.leaves(run.params)]}
                   for run in apart]
    print(json.dumps(out))
