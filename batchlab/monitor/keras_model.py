"""What KerasCallback reads of a compiled Keras model: its optimizer (refused in one line where
the callback could not measure it), the optimizer's settings for the run's record, and a
batch's row count."""

from __future__ import annotations

from typing import Any

import numpy as np

from batchlab.errors import BatchlabError


def optimizer_of(model) -> Any:
    """The compiled model's optimizer (one line when there is none, or one the wrapper cannot read)."""
    optimizer = getattr(model, "optimizer", None) if model is not None else None
    if model is None or not getattr(model, "compiled", False) or optimizer is None:
        raise BatchlabError("KerasCallback needs a compiled model with an optimizer: model.compile(optimizer=..., "
                            "loss=...) before fit")
    if getattr(optimizer, "gradient_accumulation_steps", None):
        raise BatchlabError("KerasCallback does not measure an optimizer with gradient_accumulation_steps: "
                            "apply() sees micro-batch gradients, not the update's")
    if hasattr(optimizer, "inner_optimizer"):
        raise BatchlabError(f"KerasCallback does not measure a {type(optimizer).__name__} (its apply() sees scaled "
                            f"gradients): compile with the plain optimizer")
    return optimizer


def optimizer_settings(optimizer) -> dict[str, Any]:
    """The optimizer's class (lower case), learning rate (a constant one), momentum and weight decay."""
    config = optimizer.get_config()
    settings: dict[str, Any] = {"optimizer": type(optimizer).__name__.lower()}
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
