"""Equinox models as the engine's ``init``/``apply`` pair.

**Parameters** are the model's inexact (floating) arrays, ``eqx.partition(model,
eqx.is_inexact_array)``, handed to the engine as a dict keyed by their path in the model
(``".layers[0].weight"``), so the run identity never depends on how Python prints a
function. **State**: a model with stateful layers (``eqx.nn.BatchNorm``) carries an
``eqx.nn.State``; give the factory's ``eqx.nn.make_with_state(Model)(...)`` pair, or a model
whose state batchlab then makes the same way. The state is the engine's model state.

**Calls** follow Equinox's convention: a model is called on *one* example. The adapter vmaps
it over the batch with ``axis_name="batch"`` (what ``eqx.nn.BatchNorm`` expects), calling
``model(x, state, key=...)`` when it has state, else ``model(x, key=...)`` (``key`` only
when ``__call__`` takes one). Each row gets its own dropout key, made from its position in
the batch (``common.row_keys``), so micro-batches and halves see the whole batch's masks.

**Train / eval**: ``eqx.nn.inference_mode(model, not train)``, as in Equinox (Dropout off,
BatchNorm on its running statistics, its state unchanged in evaluation).

**Re-initialization per seed**: give a factory taking ``key`` (``make_model(key)`` or the
Module class itself): each init seed calls it with that seed's key, inside the compiled
program. An already-built module keeps *its own* initial weights for every seed (a warning
says so).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax

from batchlab.models.adapters.common import call_factory, mode_kwargs, row_keys, takes
from batchlab.models.base import Model


def adapt_equinox(model: Any, sample_shape: tuple[int, ...], num_outputs: int, task: str = "classification", *,
                  factory: Callable | None = None, label: str = "the Equinox model",
                  name: str = "equinox") -> Model:
    """An Equinox module (or an ``(module, eqx.nn.State)`` pair) as an init/apply pair."""
    import equinox as eqx

    if factory is None:
        warnings.warn(f"{label} is an already-built Equinox module: every run starts from its own weights, "
                      f"whatever the init seed; pass a function that builds it (with key=) to re-initialize per "
                      f"seed", stacklevel=3)
    template, state0 = with_state(model)
    params0, static = eqx.partition(template, eqx.is_inexact_array)
    params_tree = _Named(params0)
    state_tree = _Named(state0) if state0 is not None else None
    static_train = eqx.partition(eqx.nn.inference_mode(template, False), eqx.is_inexact_array)[1]
    static_eval = eqx.partition(eqx.nn.inference_mode(template, True), eqx.is_inexact_array)[1]
    call = type(template).__call__
    keyed = takes(call, "key")

    def init(key: jax.Array):
        built, state = (template, state0) if factory is None else with_state(
            call_factory(factory, sample_shape, num_outputs, label, key=key))
        params = eqx.partition(built, eqx.is_inexact_array)[0]
        return params_tree.named(params), ({} if state_tree is None else state_tree.named(state))

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None):
        net = eqx.combine(params_tree.tree(params), static_train if train else static_eval)
        kwargs = mode_kwargs(call, train)
        keys = row_keys(key, x.shape[0]) if (keyed and key is not None) else None

        def one(xi, ki, s):
            extra = dict(kwargs, key=ki) if keyed else kwargs
            return net(xi, s, **extra) if state_tree is not None else (net(xi, **extra), s)

        s = None if state_tree is None else state_tree.tree(state)
        out, new_state = jax.vmap(one, in_axes=(0, None if keys is None else 0, None), out_axes=(0, None),
                                  axis_name="batch")(x, keys, s)
        if not train or state_tree is None:
            return out, state
        return out, state_tree.named(new_state)

    return Model(init, apply, name, task=task)


def with_state(obj: Any) -> tuple[Any, Any]:
    """(model, eqx.nn.State or None) from a model, or from a ``make_with_state`` pair. A model
    with stateful layers gets its state as ``eqx.nn.make_with_state`` makes it (stable markers)."""
    import equinox as eqx

    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], eqx.nn.State):
        return obj
    indices = jax.tree.leaves(obj, is_leaf=lambda leaf: isinstance(leaf, eqx.nn.StateIndex))
    if any(isinstance(leaf, eqx.nn.StateIndex) for leaf in indices):
        return eqx.nn.make_with_state(lambda: obj)()
    return obj, None


class _Named:
    """A pytree's array leaves as a dict keyed by their path, and back (template's structure)."""

    def __init__(self, template: Any):
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(template)
        self.paths = [jax.tree_util.keystr(path) for path, _ in leaves]

    def named(self, tree: Any) -> dict[str, Any]:
        return dict(zip(self.paths, jax.tree.leaves(tree)))

    def tree(self, named: dict[str, Any]) -> Any:
        return jax.tree.unflatten(self.treedef, [named[p] for p in self.paths])


__all__ = ["adapt_equinox", "with_state"]
