"""Run by tests/test_multi_device.py in a process of its own, with 4 CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before JAX starts); prints one
JSON object of what the tests check."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import batchlab
from batchlab.api import prepare
from batchlab.engine.gradients import Batch, batch_gradient
from batchlab.errors import BatchlabError
from batchlab.models.losses import masked_loss_sum

out = {"devices": jax.device_count()}

# 1. The same runs over 1, 2 and 4 devices: iris (120 training rows), B = 32 (a partial last
# batch of 24 rows: devices hold 8, 8, 8 and 0 real rows), dropout, micro-batches, 5 epochs = 20 steps.
same = dict(batch_size=32, epochs=5, lr=0.1, momentum=0.9, dropout=0.3, micro_batch=4, seeds=2, db=None)
params = {d: batchlab.train("iris", "mlp", devices=d, **same).runs for d in (1, 2, 4)}
out["steps"] = int(params[1][0].history["step"][-1])
out["max_difference"] = {d: max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                                for r1, rd in zip(params[1], params[d])
                                for a, b in zip(jax.tree.leaves(r1.params), jax.tree.leaves(rd.params)))
                         for d in (2, 4)}

# 2. The per-device parts of one batch against each device's gradient computed on its own.
configs, dataset, net = prepare("iris", "mlp", batch_size=16)
p, state = net.init(jax.random.PRNGKey(0))
data = (jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train))
index = jnp.arange(16, dtype=jnp.int32) * 7 % dataset.n_train
mask = (jnp.arange(16) < 11).astype(jnp.float32)  # 11 real rows: 4, 4, 3 and 0 per device
split = jax.jit(lambda p: batch_gradient(net, p, state, data, Batch(index, mask), None, None, split=True, devices=4))(p)
squares, rows = [], []
for d in range(4):
    m = mask[4 * d:4 * d + 4]
    if m.sum() == 0:
        continue
    g = jax.grad(lambda q: masked_loss_sum(net, q, state, data[0][index[4 * d:4 * d + 4]], data[1][index[4 * d:4 * d + 4]],
                                           m, train=True, key=None)[0])(p)
    squares.append(sum(float(jnp.sum(jnp.square(leaf / m.sum()))) for leaf in jax.tree.leaves(g)))
    rows.append(float(m.sum()))
out["parts"] = [float(v) for v in split.parts]
out["parts_by_hand"] = [float(np.mean(squares)), len(rows) / float(np.sum(1 / np.array(rows)))]

# 3. The online estimate over devices at (nearly) fixed parameters against the exact one from
# per-sample gradients: lr 1e-9, B = 32 over 4 devices (8 rows each), 60 epochs = 240 estimates.
run = batchlab.train("iris", "mlp", devices=4, batch_size=32, epochs=60, lr=1e-9, drop_last=True,
                     instruments="noise_scale", db=None).runs[0]
x, y = data
per_sample = jax.vmap(lambda xi, yi: jax.grad(lambda q: masked_loss_sum(
    net, q, state, xi[None], yi[None], jnp.ones(1), train=True, key=None)[0])(run.params))(x, y)
flat = np.concatenate([np.asarray(leaf, np.float64).reshape(len(x), -1) for leaf in jax.tree.leaves(per_sample)], 1)
mean = flat.mean(0)
out["exact"] = {"grad_sq": float(mean @ mean), "trace": float(((flat - mean) ** 2).sum(1).mean()), "n": len(x)}
last = {k: float(run.steps[k][-1]) for k in ("noise_grad_sq", "noise_trace", "noise_grad_sq_se", "noise_scale")}
out["online"] = last

# 4. Refusals, before anything trains.
out["errors"] = {}
for name, settings in {"uneven": dict(devices=4, batch_size=30), "too_many": dict(devices=8)}.items():
    try:
        batchlab.train("iris", "mlp", epochs=1, db=None, **settings)
        out["errors"][name] = None
    except BatchlabError as error:
        out["errors"][name] = str(error)
out["all"] = prepare("iris", "mlp", devices="all", batch_size=32)[0][0].devices

# 5. A one-device program saved to disk loads onto one device, though JAX sees four.
from batchlab.engine import saved_programs  # noqa: E402

saved_programs.save(("test", "double"), jax.jit(lambda a: 2 * a).lower(jnp.ones(3)).compile())
loaded = saved_programs.load(("test", "double"))
out["saved_program"] = None if loaded is None else [float(v) for v in loaded(jnp.ones(3))]
print(json.dumps(out))
