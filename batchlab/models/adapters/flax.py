"""Flax models (linen and NNX) as the engine's ``init``/``apply`` pair.

**Linen.** A linen Module is a description without weights, so every init seed gets fresh
weights from the module itself: ``module.init({'params': key, 'dropout': ...}, x)`` with
that seed's key. Variables of collections other than ``params`` (``batch_stats``) are the
engine's model state. A training call is ``module.apply(variables, x, rngs={'dropout': key},
mutable=[those collections])``; an evaluation call mutates nothing and draws no random numbers.

**NNX.** An NNX Module holds its weights. Give a factory, ``make_model(..., rngs: nnx.Rngs)``
(or a Module class): each init seed builds the model again with ``nnx.Rngs(seed key)``,
inside the compiled program. An already-built Module keeps *its own* initial weights for every
init seed (a warning says so). The model is split into (graphdef, params, rng state, rest):
``nnx.Param`` variables are trained, ``rest`` (batch-norm statistics, other variables) is the
engine's state, and the rng state (dropout streams) is rebuilt from the engine's dropout key
at every training call, one ``fold_in`` per stream, so two dropout layers never share a mask.
Parameters and state are handed to the engine as plain nested dicts (``nnx.to_pure_dict``).

**Train / eval mode**, as in Flax: linen gets a ``train``/``training``/``deterministic``
keyword when its ``__call__`` has one; NNX gets ``set_attributes(deterministic=...,
use_running_average=...)`` (what ``model.train()``/``model.eval()`` do; two graphdefs made
once), and the same keyword when ``__call__`` has one.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp

from batchlab.errors import BatchlabError
from batchlab.models.adapters.common import call_factory, fold, mode_kwargs, takes
from batchlab.models.base import Model


def adapt_linen(module: Any, sample_shape: tuple[int, ...], num_outputs: int, task: str = "classification",
                *, name: str = "flax.linen") -> Model:
    """A Flax linen Module as an init/apply pair (fresh weights for every init seed)."""
    call = type(module).__call__
    sample = jnp.zeros((1, *sample_shape), jnp.float32)

    def init(key: jax.Array):
        variables = dict(module.init({"params": key, "dropout": jax.random.fold_in(key, 1)}, sample,
                                     **mode_kwargs(call, False)))
        if "params" not in variables:
            raise BatchlabError(f"{name} has no parameters to train")
        params = variables.pop("params")
        return params, variables

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None):
        variables = {"params": params, **state}
        rngs = None if key is None else {"dropout": key}
        kwargs = mode_kwargs(call, train)
        if train and state:
            out, updates = module.apply(variables, x, rngs=rngs, mutable=list(state), **kwargs)
            return out, {**state, **updates}
        return module.apply(variables, x, rngs=rngs, **kwargs), state

    return Model(init, apply, name, task=task)


def adapt_nnx(model: Any, sample_shape: tuple[int, ...], num_outputs: int, task: str = "classification", *,
              factory: Callable | None = None, label: str = "the NNX model", name: str = "flax.nnx") -> Model:
    """An NNX Module as an init/apply pair; ``factory`` (called with ``rngs=``) re-initializes
    it per seed, without one every seed starts from ``model``'s weights."""
    from flax import nnx

    if factory is None:
        warnings.warn(f"{label} is an already-built NNX module: every run starts from its own weights, whatever "
                      f"the init seed; pass a function that builds it (with rngs=) to re-initialize per seed",
                      stacklevel=3)
    template = nnx.clone(model)
    graph_eval = _graphdef(nnx, template, train=False)
    graph_train, params0, rngs0, rest0 = nnx.split(_set_mode(template, True), nnx.Param, nnx.RngState, ...)
    call = type(model).__call__

    def build(key: jax.Array):
        if factory is None:
            return params0, rest0
        built = call_factory(factory, sample_shape, num_outputs, label, rngs=nnx.Rngs(key), key=key)
        _, params, _, rest = nnx.split(built, nnx.Param, nnx.RngState, ...)
        return params, rest

    def init(key: jax.Array):
        params, rest = build(key)
        return nnx.to_pure_dict(params), nnx.to_pure_dict(rest)

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None):
        rngs = rngs0 if key is None else _rng_state(nnx, rngs0, key)
        net = nnx.merge(graph_train if train else graph_eval, _filled(nnx, params0, params), rngs,
                        _filled(nnx, rest0, state))
        out = net(x, **mode_kwargs(call, train))
        if not train:
            return out, state
        _, _, _, rest = nnx.split(net, nnx.Param, nnx.RngState, ...)
        return out, nnx.to_pure_dict(rest)

    return Model(init, apply, name, task=task)


def _set_mode(model, train: bool):
    """``model`` with NNX's train/eval attributes set (Dropout.deterministic, BatchNorm.use_running_average)."""
    model.set_attributes(deterministic=not train, use_running_average=not train, raise_if_not_found=False)
    return model


def _graphdef(nnx, model, train: bool):
    return nnx.split(_set_mode(model, train), nnx.Param, nnx.RngState, ...)[0]


def _filled(nnx, template, pure: dict):
    """A copy of the nnx.State ``template`` holding the arrays of the plain dict ``pure``."""
    state = jax.tree.map(lambda leaf: leaf, template)  # new Variable objects: the template stays as it is
    nnx.replace_by_pure_dict(state, pure)
    return state


def _rng_state(nnx, template, key: jax.Array):
    """The model's rng streams, each keyed by ``fold_in(dropout key, stream index)``, counts at 0."""
    variables, treedef = jax.tree.flatten(template, is_leaf=lambda v: isinstance(v, nnx.Variable))
    fresh = []
    for i, var in enumerate(variables):
        if isinstance(var, nnx.RngKey):
            value = fold(key, i)
            shape = jnp.shape(_value(var))
            fresh.append(var.replace(jax.random.split(value, shape) if shape else value))
        elif isinstance(var, nnx.RngCount):
            fresh.append(var.replace(jnp.zeros_like(_value(var))))
        else:
            fresh.append(var)
    return jax.tree.unflatten(treedef, fresh)


def _value(var):
    """A Variable's value (``get_value`` in recent Flax, ``.value`` before)."""
    return var.get_value() if hasattr(var, "get_value") else var.value


def takes_rngs(factory: Callable) -> bool:
    """Whether a factory builds an NNX model (it takes ``rngs``)."""
    return takes(factory, "rngs")


__all__ = ["adapt_linen", "adapt_nnx", "takes_rngs"]
