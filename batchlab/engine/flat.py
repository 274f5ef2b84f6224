"""A model whose parameters are one flat vector, for programs that measure parameter norms.

On a CPU each kernel of a step costs about 1.5 us, a lot for steps of 15-100 us. Over a
parameter tree, ``grad_norm``, ``update_norm`` and ``dist_init`` add 19 kernels to the
45 of a digits-MLP step (per-leaf differences, concatenations, split reductions): +23-29%
per step. Over one flat vector the three are the rows of one matrix, written in one fused
pass and reduced in one more kernel: +2 kernels, +2-7% (up to +17% in some processes: the
same program's speed varies that much from process to process here). Bare training keeps
the tree: the flat layout trades the optimizer's per-leaf kernels for slices in the
forward pass and a concatenation in the backward pass, which measured -6% to +6% per
step, so it gains nothing where no norm is measured.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab.models import describe, description
from batchlab.models.base import Model


def unchanged(params):
    """The parameters as they are (no flat view was made)."""
    return params


_made: dict[Model, tuple[Model, Callable]] = {}


def flat_model(model: Model) -> tuple[Model, Callable]:
    """``model`` with its parameters as one vector, and the function that turns a vector
    (or a stack of them, shape (..., P)) back into the model's parameter tree. Made once per
    model and process, so cohorts of one model share compiled programs."""
    if model not in _made:
        flat, unravel = _made[model] = _flatten(model)
        if flat is not model and description(model) is not None:
            describe(flat, ("flat", description(model)))
    return _made[model]


def _flatten(model: Model) -> tuple[Model, Callable]:
    shapes = jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32))[0]
    leaves, treedef = jax.tree.flatten(shapes)
    if len({leaf.dtype for leaf in leaves}) > 1:  # one vector holds one dtype; keep the tree
        return model, unchanged
    ends = np.cumsum([math.prod(leaf.shape) for leaf in leaves])

    def unravel(vector: jax.Array):
        lead = vector.shape[:-1]
        parts = jnp.split(vector, ends[:-1], axis=-1)
        return jax.tree.unflatten(treedef, [p.reshape(lead + leaf.shape) for p, leaf in zip(parts, leaves)])

    def init(key: jax.Array):
        params, state = model.init(key)
        return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)]), state

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None, **mask):
        return model.apply(unravel(params), state, x, train=train, key=key, **mask)

    return model._replace(init=init, apply=apply, dense_taps=None), unravel
