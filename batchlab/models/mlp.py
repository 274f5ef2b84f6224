"""Multi-layer perceptron: Dense(width, activation) x len(hidden) -> Dense(classes).

Hidden layers use the chosen init (Brownlee: he_uniform); the output layer glorot_uniform,
biases zero (Keras' defaults). Optional inverted dropout after each hidden activation.
"""

from __future__ import annotations

import math

import jax

from batchlab.models.base import ACTIVATIONS, Model, dense_init, dropout


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (50,),
        activation: str = "relu", init: str = "he_uniform", dropout_rate: float = 0.0) -> Model:
    act = ACTIVATIONS[activation]
    widths = (math.prod(input_shape), *hidden, num_classes)

    def init_fn(key: jax.Array):
        keys = jax.random.split(key, len(widths) - 1)
        layers = [
            dense_init(k, fan_in, fan_out, init if i < len(hidden) else "glorot_uniform")
            for i, (k, fan_in, fan_out) in enumerate(zip(keys, widths[:-1], widths[1:]))
        ]
        return layers, {}

    def forward(params, x, *, train: bool = False, key: jax.Array | None = None, shifts=None):
        """Logits and the input of every dense layer; ``shifts`` are added to pre-activations."""
        h = x.reshape(x.shape[0], -1)
        inputs = []
        for i, layer in enumerate(params):
            inputs.append(h)
            z = h @ layer["w"] + layer["b"]
            if shifts is not None:
                z = z + shifts[i]
            if i == len(params) - 1:
                return z, inputs
            h = act(z)
            if dropout_rate:
                h = dropout(h, dropout_rate, None if key is None else jax.random.fold_in(key, i), train)

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None):
        return forward(params, x, train=train, key=key)[0], state

    def dense_taps(params, state, x, shifts):
        return forward(params, x, shifts=shifts)

    return Model(init_fn, apply, "mlp", dense_taps, rowwise=True)
