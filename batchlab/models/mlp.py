"""Multi-layer perceptron: Dense(width, activation) x len(hidden) -> Dense(classes).

Hidden layers use the chosen init (Brownlee: he_uniform); the output layer glorot_uniform,
biases zero (Keras' defaults). Optional batch norm or ghost batch norm between each hidden
layer's dense part and its activation (``models/norm.py``), and inverted dropout after it.
"""

from __future__ import annotations

import math
from functools import partial

import jax

from batchlab.models.base import ACTIVATIONS, Model, dense_init, dropout
from batchlab.models.norm import batch_norm, norm_init


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (50,),
        activation: str = "relu", init: str = "he_uniform", dropout_rate: float = 0.0,
        norm: str = "none", ghost_size: int | None = None) -> Model:
    """``norm``: "none", "batch" or "ghost" (batch norm over ``ghost_size`` rows at a time)."""
    act = ACTIVATIONS[activation]
    widths = (math.prod(input_shape), *hidden, num_classes)
    normed, ghost = norm != "none", (ghost_size if norm == "ghost" else None)

    init_fn = partial(_init, widths=widths, init=init, normed=normed)

    def forward(params, state, x, *, train: bool = False, key: jax.Array | None = None, shifts=None,
                mask: jax.Array | None = None):
        """Logits, the input of every dense layer and the new state; ``shifts`` are added to
        pre-activations."""
        h = x.reshape(x.shape[0], -1)
        inputs, stats = [], []
        for i, layer in enumerate(params):
            inputs.append(h)
            z = h @ layer["w"] + layer["b"]
            if shifts is not None:
                z = z + shifts[i]
            if i == len(params) - 1:
                return z, inputs, ({"norm": stats} if normed else state)
            if normed:
                z, new = batch_norm(z, layer, state["norm"][i], train=train, mask=mask, ghost_size=ghost)
                stats.append(new)
            h = act(z)
            if dropout_rate:
                h = dropout(h, dropout_rate, None if key is None else jax.random.fold_in(key, i), train)

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None, mask=None):
        logits, _, new_state = forward(params, state, x, train=train, key=key, mask=mask)
        return logits, new_state

    def dense_taps(params, state, x, shifts):
        return forward(params, state, x, shifts=shifts)[:2]

    if normed:  # rows interact through the batch statistics: no padding to share programs, no taps
        return Model(init_fn, apply, "mlp", uses_mask=True)
    return Model(init_fn, apply, "mlp", dense_taps, rowwise=True)


def _init(key: jax.Array, widths: tuple[int, ...], init: str, normed: bool):
    """Dense layers (hidden ones with ``init``, the output layer glorot_uniform), each hidden one
    with its norm's scale and shift when ``normed``; the state: the norms' running statistics."""
    hidden = len(widths) - 2
    keys = jax.random.split(key, len(widths) - 1)
    layers = [dense_init(k, fan_in, fan_out, init if i < hidden else "glorot_uniform")
              for i, (k, fan_in, fan_out) in enumerate(zip(keys, widths[:-1], widths[1:]))]
    if not normed:
        return layers, {}
    norms = [norm_init(width) for width in widths[1:-1]]
    layers = [{**layer, **scales} for layer, (scales, _) in zip(layers, norms)] + layers[hidden:]
    return layers, {"norm": [stats for _, stats in norms]}
