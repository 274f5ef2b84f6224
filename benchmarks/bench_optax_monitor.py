"""Time ``optax_monitor`` (default instruments) inside a jitted JAX training step against the
same step with the bare optax optimizer.

Problem: scikit-learn's digits (1437 training rows, batchlab's split), batchlab's ``mlp``
architecture written in plain JAX (flatten -> Dense(50) relu -> Dense(10), 3,760 parameters),
softmax cross-entropy (batch mean), ``optax.sgd(0.01, momentum=0.9)``, a new permutation each
epoch, B = 32 and 256. The step ``(params, opt_state, x, y) -> (params, opt_state)`` is jitted
once and called from a Python loop, as a user's loop does; monitored, ``OptaxRecorder.read``
copies the recorded values to the host every 200 updates (no store: ``db=None``), and the run
ends with ``block_until_ready``. Bare and monitored runs alternate in pairs after a warm-up
(compilation outside the timings); the overhead is the median over ``--repeat`` pairs (default
9) of monitored minus bare.

Usage::

    python benchmarks/bench_optax_monitor.py            # about 1 minute on 2 cores
    python benchmarks/bench_optax_monitor.py --quick

Results are printed and written to benchmarks/results/bench_optax_monitor.json.
"""

from __future__ import annotations

import argparse
import time

from harness import paired_overhead, print_overheads, save  # benchmarks/harness.py

CASES = ((32, 5000), (256, 3000))  # (B, updates per timing; x 1/3 with --quick)
READ_EVERY = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer updates and repeats")
    parser.add_argument("--repeat", type=int, default=None, help="pairs of timings per figure (median)")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 9)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from batchlab.data import load_dataset, resolve_data_config
    from batchlab.monitor import OptaxRecorder, optax_monitor

    data = load_dataset(resolve_data_config("digits"))
    x_all, y_all = jnp.asarray(data.x_train.reshape(len(data.x_train), -1)), jnp.asarray(data.y_train)
    n = len(data.x_train)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (64, 50)) * 0.1, "b1": jnp.zeros(50),
                "w2": jax.random.normal(k2, (50, 10)) * 0.1, "b2": jnp.zeros(10)}

    def loss(p, x, y):
        logits = jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def make_step(tx):
        @jax.jit
        def step(p, s, x, y):
            g = jax.grad(loss)(p, x, y)
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s
        return step

    bare_tx, mon_tx = optax.sgd(0.01, momentum=0.9), optax_monitor(optax.sgd(0.01, momentum=0.9))
    steps = {"bare": make_step(bare_tx), "monitored": make_step(mon_tx)}
    txs = {"bare": bare_tx, "monitored": mon_tx}

    def run(kind: str, batch: int, updates: int) -> float:
        start = time.perf_counter()
        params = init(jax.random.PRNGKey(0))
        state = txs[kind].init(params)
        record = OptaxRecorder(None, "bench", batch_size=batch) if kind == "monitored" else None
        rng, done = np.random.default_rng(0), 0
        while done < updates:
            order = rng.permutation(n)
            for i in range(0, n - batch + 1, batch):
                rows = order[i:i + batch]
                params, state = steps[kind](params, state, x_all[rows], y_all[rows])
                done += 1
                if record is not None and done % READ_EVERY == 0:
                    record.read(state)
                if done == updates:
                    break
        jax.block_until_ready(params)
        if record is not None:
            record.read(state)
            record.close()
        return time.perf_counter() - start

    rows = []
    for batch, updates in CASES:
        updates //= 3 if args.quick else 1
        for kind in steps:
            run(kind, batch, 50)  # compiles (every partial-batch shape is skipped: one shape per B)
        rows.append({"batch_size": batch, **paired_overhead(lambda: run("bare", batch, updates),
                                                            lambda: run("monitored", batch, updates), repeat, updates)})
    print_overheads(f"optax_monitor in a jitted step vs bare optax (median of {repeat} pairs)",
                    rows, [("batch_size", "B")])
    print(f"wrote {save('bench_optax_monitor', {'repeat': repeat, 'rows': rows})}")


if __name__ == "__main__":
    main()
