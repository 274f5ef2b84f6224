"""Multinomial logistic regression (softmax regression), initialized at zero: a convex problem."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from batchlab.models.base import Model


def logreg(input_shape: tuple[int, ...], num_classes: int) -> Model:
    features = math.prod(input_shape)

    def init(key: jax.Array):
        del key  # zero init: every seed starts at the same point
        return {"w": jnp.zeros((features, num_classes)), "b": jnp.zeros((num_classes,))}, {}

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None):
        return x.reshape(x.shape[0], -1) @ params["w"] + params["b"], state

    def dense_taps(params, state, x, shifts):
        flat = x.reshape(x.shape[0], -1)
        logits = flat @ params["w"] + params["b"]
        return (logits if shifts is None else logits + shifts[0]), [flat]

    return Model(init, apply, "logreg", dense_taps, rowwise=True)
