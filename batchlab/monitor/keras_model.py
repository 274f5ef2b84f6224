"""What KerasCallback reads of a compiled Keras model, and the helpers its wrappers share: the
optimizer (refused in one line where the callback could not measure it) and its settings, a
batch's rows, Keras' gradient accumulators and the two-batch estimate that an update of k
micro-batches gives (``keras_callback.py``'s docstring explains the design), the instruments a
fit records, the run's description, and the variables a JAX fit adds to the optimizer."""

from __future__ import annotations

from typing import Any

import numpy as np

from batchlab.errors import BatchlabError
from batchlab.monitor.described import describe


def optimizer_of(model) -> Any:
    """The compiled model's optimizer (one line when there is none, or one the wrapper cannot read)."""
    optimizer = getattr(model, "optimizer", None) if model is not None else None
    if model is None or not getattr(model, "compiled", False) or optimizer is None:
        raise BatchlabError("KerasCallback needs a compiled model with an optimizer: model.compile(optimizer=..., "
                            "loss=...) before fit")
    if hasattr(optimizer, "inner_optimizer"):
        raise BatchlabError(f"KerasCallback does not measure a {type(optimizer).__name__} (its apply() sees scaled "
                            f"gradients): compile with the plain optimizer")
    return optimizer


def optimizer_settings(optimizer) -> dict[str, Any]:
    """The optimizer's class (lower case), learning rate (a constant one), momentum, weight decay
    and gradient accumulation steps (when it accumulates)."""
    config = optimizer.get_config()
    settings: dict[str, Any] = {"optimizer": type(optimizer).__name__.lower()}
    if accumulation_steps(optimizer) > 1:
        settings["gradient_accumulation_steps"] = accumulation_steps(optimizer)
    for key, name in (("learning_rate", "lr"), ("momentum", "momentum"), ("weight_decay", "weight_decay")):
        value = config.get(key)
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool):
            settings[name] = float(value)
        elif key == "learning_rate" and isinstance(value, dict):
            settings["lr_schedule"] = str(value.get("class_name", "schedule"))
    return settings


def rows_of(data: Any) -> int | None:
    """Rows of a batch ``(x, y[, w])``: the leading length of the first array in it (static under jit)."""
    items = [data]
    while items:
        item = items.pop(0)
        shape = getattr(item, "shape", None)
        if shape is not None and len(shape) >= 1 and shape[0] is not None:
            return int(shape[0])
        if isinstance(item, (tuple, list)):
            items[:0] = list(item)
        elif isinstance(item, dict):
            items[:0] = list(item.values())
    return None


def batch_rows(rows: Any, given: Any) -> int:
    """The rows of the batch ``train_step`` saw, else the ``batch_size`` setting (one line without either)."""
    rows = rows if rows is not None else given
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise BatchlabError("KerasCallback cannot tell the batch's rows (model.train_step was not called "
                            "through the model): pass batch_size= to KerasCallback")
    return rows


def accumulation_steps(optimizer) -> int:
    """Keras' ``gradient_accumulation_steps`` k: micro-batches per update (1 without)."""
    return int(getattr(optimizer, "gradient_accumulation_steps", None) or 1)


def accumulators(optimizer, variables: list) -> list:
    """The optimizer's gradient accumulators (the sum of this update's earlier micro-batch
    gradients), in the order of ``variables``; none without accumulation."""
    if accumulation_steps(optimizer) == 1:
        return []
    return [optimizer._accumulated_gradients[optimizer._get_variable_index(v)] for v in variables]


def micro_batch_sums(sq_norm: Any, rows: int) -> tuple:
    """One micro-batch's terms of an update's running sums: (|g_j|^2, 1/b_j, 1 micro-batch, b_j rows)."""
    return sq_norm, 1.0 / rows, 1.0, float(rows)


def two_batch(sums: Any, grad: Any, k: int) -> tuple:
    """The two-batch estimate's (halves, small_sq) for an update of k micro-batches, from the
    sums of :func:`micro_batch_sums` over the micro-batches this fit saw and ``grad``, the mean
    of the k micro-batches' mean gradients that the optimizer applies. The small batches are
    the micro-batches: small_sq = mean_j |g_j|^2 and B_s = seen / sum_j 1/b_j; the big batch
    is ``grad``, with B_b = k B_s (E|grad|^2 = |G|^2 + tr(Sigma) sum_j 1/b_j / k^2, as Keras
    weights micro-batches equally). With fewer than k seen (the update finishes micro-batches
    of an earlier fit) B_b = B_s: the noise averages stay as they were."""
    sq_sum, inv_rows, seen = sums[0], sums[1], sums[2]
    small = seen / inv_rows
    big = small * (1 + (k - 1) * (seen >= k))
    return ((None, small), (grad, big)), sq_sum / seen


def copy_tensors(tensors: list) -> list:
    """Detached copies of torch tensors, in one fused call."""
    import torch

    with torch.no_grad():
        return torch._foreach_mul([t.detach() for t in tensors], 1.0)


def instruments_for(chosen: tuple, k: int, default: bool) -> tuple:
    """A fit's instruments: noise_scale needs micro-batches (k >= 2); the default drops it without."""
    if k > 1 or not any(ins.halves for ins in chosen):
        return chosen
    if default:
        return tuple(ins for ins in chosen if not ins.halves)
    raise BatchlabError("noise_scale needs two batch sizes and Keras' fit gives no split of a batch: compile "
                        "with an optimizer with gradient_accumulation_steps >= 2 (its micro-batches split it)")


def describe_fit(run_id: str, name: str, settings: dict[str, Any], instruments: tuple, model_name: str,
                 batch_size: int):
    """The run's (config, monitored record) with ``batch_size``, the one its updates used most."""
    settings = dict(settings)
    given = settings.get("batch_size")
    if given is not None and given != batch_size:
        settings["batch_size_given"] = settings.pop("batch_size")
    outputs = tuple(out if ins.every == 1 else f"{out}@{ins.every}" for ins in instruments for out in ins.outputs)
    return describe(run_id, name, settings, batch_size, outputs, model_name)


def added_variables(optimizer, state: Any) -> tuple[list, Any]:
    """One variable added to the optimizer for the fit per leaf of ``state`` (each in its own
    buffer: fit donates every state array), and the tree's structure."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(state)
    variables = []
    for i, leaf in enumerate(leaves):
        variables.append(optimizer.add_variable(tuple(leaf.shape), dtype=str(leaf.dtype), name=f"batchlab_state_{i}"))
        variables[-1].assign(jnp.array(leaf, copy=True))
    return variables, treedef
