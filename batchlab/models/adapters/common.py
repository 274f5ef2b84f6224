"""What every adapter shares: calling a user's model factory, telling a framework's model which
mode it is in, turning the engine's dropout key into the keys a framework wants, and the checks
a model must pass before anything trains.

The engine's dropout key (``engine/step.py``, ``row_key``) is a typed key whose data is
``[threefry key (2 words), first batch row, row stride]``: random draws whose leading axis is
the batch's rows give each row the same bits whichever part of the batch (micro-batch, half)
holds it. Frameworks that draw one mask over the whole batch (Flax, Keras) get it as it is
(Flax) or as raw threefry bits (Keras); Equinox, which is called per example, gets one key per
row made from that row's position in the batch, so its masks are split-invariant too.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab.errors import BatchlabError

# Parameter names a factory may use for the input shape (one sample, no batch axis) and for
# the number of classes (or regression outputs). Unnamed required parameters are given these
# two in order.
SHAPE_NAMES = ("input_shape", "sample_shape", "in_shape", "shape")
OUTPUT_NAMES = ("num_classes", "num_outputs", "n_classes", "classes", "outputs", "out_features")
# Keyword arguments through which frameworks' models are told train or eval mode:
# name -> the value it takes in training mode.
MODE_ARGUMENTS = {"train": True, "training": True, "is_training": True, "deterministic": False,
                  "inference": False}
ROWWISE_NAME, ROWWISE_WORDS = "batchlab_rowwise", 4  # the engine's row-indexed key: threefry key, first row, stride


def parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    """``fn``'s parameters by name ({} when Python cannot tell)."""
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def call_factory(factory: Callable, sample_shape: tuple[int, ...], num_outputs: int, label: str,
                 **extra: Any) -> Any:
    """Call a user's ``make_model`` with what its signature asks for.

    Named parameters get their value by name (``input_shape``/``num_classes`` and their
    aliases above; ``key``, ``rngs`` from ``extra``); required parameters with other names get
    the input shape, then the number of classes, in order. A factory may take none, one or
    both. Anything the factory raises is a one-line error naming ``label``.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    unnamed = {"input_shape": sample_shape, "num_classes": num_outputs}  # what required parameters get, in order
    for name, p in parameters(factory).items():
        if name in SHAPE_NAMES:
            value = unnamed.pop("input_shape", sample_shape)
        elif name in OUTPUT_NAMES:
            value = unnamed.pop("num_classes", num_outputs)
        elif name in extra:
            value = extra[name]
        elif p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        elif unnamed and p.kind != p.KEYWORD_ONLY:
            value = unnamed.pop(next(iter(unnamed)))
        else:
            raise BatchlabError(f"{label}: cannot tell what to pass as its parameter {name!r} "
                                f"(batchlab passes input_shape, num_classes, key or rngs)")
        if p.kind == p.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[name] = value
    try:
        return factory(*args, **kwargs)
    except BatchlabError:
        raise
    except Exception as exc:  # the user's code: any exception becomes one line
        raise BatchlabError(f"{label} raised {type(exc).__name__}: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("..." if len(text) > 300 else "") if text else "(no message)"


def mode_kwargs(call: Callable, train: bool) -> dict[str, bool]:
    """The train/eval keyword arguments ``call`` accepts (``train``, ``training``,
    ``deterministic``, ``inference``, ...), set for ``train``; {} when it takes none."""
    params = parameters(call)
    return {name: (train if on else not train) for name, on in MODE_ARGUMENTS.items() if name in params}


def takes(call: Callable, name: str) -> bool:
    """Whether ``call`` names a parameter ``name``."""
    return name in parameters(call)


def _is_rowwise(key: jax.Array) -> bool:
    """Whether ``key`` is the engine's row-indexed key (its PRNG implementation is named
    ``batchlab_rowwise``; this layer does not import the engine)."""
    return (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and ROWWISE_NAME in repr(jax.random.key_impl(key))
            and jax.random.key_data(key).shape[-1] == ROWWISE_WORDS)


def _typed(key: jax.Array) -> jax.Array:
    """A typed key from a raw uint32[2] key (typed keys are returned as they are)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32), impl="threefry2x32")


def row_keys(key: jax.Array, rows: int) -> jax.Array:
    """One threefry key per batch row, for frameworks called on one example at a time.

    From the engine's row-indexed key, row i's key is ``fold_in(threefry key, batch row)``
    with batch row = first + stride * i: the same key for that row in every split of the batch.
    Any other key is split into ``rows`` keys.
    """
    if _is_rowwise(key):
        data = jax.random.key_data(key)
        base = jax.random.wrap_key_data(data[:2], impl="threefry2x32")
        batch_rows = data[2] + data[3] * jnp.arange(rows, dtype=jnp.uint32)
        return jax.vmap(lambda r: jax.random.fold_in(base, r))(batch_rows)
    return jax.random.split(_typed(key), rows)


def raw_key(key: jax.Array, index: int) -> jax.Array:
    """A raw threefry key (uint32[2]) made from ``key`` and ``index``, for frameworks that keep
    their random state as raw key words (Keras' seed generators)."""
    data = jax.random.key_data(jax.random.fold_in(_typed(key), index))
    return data[:2].astype(jnp.uint32)


def fold(key: jax.Array, index: int) -> jax.Array:
    """``fold_in(key, index)`` as a typed key (a row-indexed key keeps its rows)."""
    return jax.random.fold_in(_typed(key), index)


def check_outputs(model, x: np.ndarray, num_outputs: int, task: str, label: str) -> None:
    """One evaluation-mode forward pass on (at most) 2 training rows, at the seed-0 init, then
    :func:`check_output_values`; and one training-mode pass, so a model that fails only in
    training (dropout without a key, ...) fails here rather than in the compiled step."""
    rows = jnp.asarray(np.asarray(x[:2]))
    params, state = model.init(jax.random.PRNGKey(0))
    out, _ = model.apply(params, state, rows, train=False, key=None)
    check_output_values(np.asarray(out), len(rows), num_outputs, task, label)
    model.apply(params, state, rows, train=True, key=jax.random.key(0))


def check_output_values(out: np.ndarray, rows: int, num_outputs: int, task: str, label: str) -> None:
    """Refuse, in one line, outputs that are not one row of ``num_outputs`` values per sample,
    that are not finite, or (classification) that are already probabilities: the engine's
    loss takes logits."""
    out = np.asarray(out)
    single = task == "regression" and num_outputs == 1 and out.shape == (rows,)
    if out.shape != (rows, num_outputs) and not single:
        what = "classes" if task == "classification" else "regression outputs"
        raise BatchlabError(f"{label} outputs shape {out.shape} for {rows} rows; the data has "
                            f"{num_outputs} {what}, so its last layer needs {num_outputs} outputs")
    if not np.all(np.isfinite(out)):
        raise BatchlabError(f"{label} gives non-finite outputs (NaN or inf) at initialization "
                            f"on the first training rows")
    if task == "classification" and num_outputs > 1 and np.all(out >= 0) and np.allclose(out.sum(-1), 1, atol=1e-5):
        raise BatchlabError(f"{label} outputs probabilities (rows sum to 1); batchlab's cross-entropy takes "
                            f"logits: remove the final softmax")


__all__ = ["call_factory", "mode_kwargs", "takes", "row_keys", "raw_key", "fold", "check_outputs",
           "check_output_values", "one_line"]
