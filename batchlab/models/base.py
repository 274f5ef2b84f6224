"""What the engine sees of a model: a pair of pure functions.

``init(key) -> (params, state)`` and
``apply(params, state, x, *, train, key) -> (logits, new_state)``, where ``state`` holds
non-trained variables (batch-norm running statistics; an empty dict for most models) and
``key`` drives dropout. Any framework can be adapted to this pair.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Params = Any
State = Any


class Model(NamedTuple):
    init: Callable[[jax.Array], tuple[Params, State]]
    apply: Callable[..., tuple[jax.Array, State]]
    name: str = "model"
    # Optional, for models made of dense layers only: ``dense_taps(params, state, x, shifts)
    # -> (logits, layer_inputs)``, where ``shifts[l]`` (unless None) is added to layer l's
    # pre-activation.
    # Instruments then get per-sample gradient inner products layer by layer
    # ((a_i . a_j + 1) (d_i . d_j)) without forming per-sample gradients.
    dense_taps: Callable | None = None
    # "classification" (integer labels, softmax cross-entropy) or "regression" (float targets,
    # mean squared error); the engine's loss and metrics follow it.
    task: str = "classification"
    # True when each row's output depends on that row alone (no batch statistics): then the
    # engine may pad batches with masked rows to share one compiled program between sizes.
    rowwise: bool = False
    # True when ``apply`` takes ``mask=`` (1 for a batch's real rows, 0 for padding) in training
    # mode: models with batch statistics, so padded rows of a partial batch never enter them.
    uses_mask: bool = False


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def initializer(name: str) -> Callable[[jax.Array, tuple[int, ...]], jax.Array]:
    """Keras-named weight initializers (fan_in/fan_out as Keras computes them)."""

    def init(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        fan_in, fan_out = _fans(shape)
        if name == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
        elif name == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
        elif name == "he_normal":
            return jax.random.truncated_normal(key, -2, 2, shape) * math.sqrt(2.0 / fan_in) / 0.87962566
        elif name == "glorot_normal":
            return jax.random.truncated_normal(key, -2, 2, shape) * math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566
        elif name == "zeros":
            return jnp.zeros(shape)
        else:
            raise ValueError(name)
        return jax.random.uniform(key, shape, minval=-limit, maxval=limit)

    return init


INITIALIZERS = ("he_uniform", "glorot_uniform", "he_normal", "glorot_normal", "zeros")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "linear": lambda x: x,
}


def dense_init(key: jax.Array, fan_in: int, fan_out: int, init: str) -> dict:
    """A dense layer's weights (``init``) and zero biases, as in Keras."""
    return {"w": initializer(init)(key, (fan_in, fan_out)), "b": jnp.zeros((fan_out,))}


def dropout(x: jax.Array, rate: float, key: jax.Array | None, train: bool) -> jax.Array:
    """Inverted dropout: drop with probability ``rate`` in training, identity in evaluation."""
    if not train or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def parameter_count(model: Model) -> int:
    """How many parameters ``model.init`` makes, from their shapes alone (nothing is allocated)."""
    import math

    shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))[0]
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def activation_count(model: Model, row: jax.ShapeDtypeStruct) -> int:
    """Floats one row's forward pass computes (every intermediate of ``model.apply`` in
    training mode, traced from shapes alone): what a training step keeps per row for its
    backward pass, an upper bound on what evaluation holds per row."""
    import math

    params, state = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    x = jax.ShapeDtypeStruct((1, *row.shape), row.dtype)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    traced = jax.make_jaxpr(lambda p, s, x, k: model.apply(p, s, x, train=True, key=k))(params, state, x, key)

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            inner = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
            if inner:  # a nested call (jit, custom derivative, a framework's wrapper): count inside it
                total += sum(count(getattr(v, "jaxpr", v)) for v in inner)
            else:
                total += sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
        return total

    return count(traced.jaxpr)
