"""Built-in models by name (``catalog.MODELS``), and what identifies a model: what a built-in
one is made of (:func:`description`), a model given as code by its fingerprint."""

from __future__ import annotations

import functools

from batchlab.config import ModelConfig
from batchlab.errors import BatchlabError
from batchlab.models.base import ACTIVATIONS, INITIALIZERS, Model
from batchlab.models.catalog import MODELS
from batchlab.models.cnn import cnn, image_shape
from batchlab.models.logreg import logreg
from batchlab.models.mlp import mlp

# What each model batchlab built is made of: its config and the data's shape, classes and task
# (with this package's source, all that decides its code). Models given as code have none.
_descriptions: dict[Model, tuple] = {}


def description(model: Model) -> tuple | None:
    """What a built-in model (or a view of one) is made of, as plain values; None for a model
    given as code. Compiled programs are kept on disk under it (``engine/saved_programs.py``)."""
    return _descriptions.get(model)


def describe(model: Model, made_of: tuple) -> Model:
    """Record what ``model`` is made of (for models batchlab builds, or derives from one)."""
    _descriptions[model] = made_of
    return model


def fingerprint(model: Model, dataset) -> str:
    """What identifies a model given as code: SHA-256 of its parameter tree (structure,
    shapes, dtypes and initial values at seed 0) and of its evaluation-mode outputs on the
    first 16 training rows (so two models with equal weights but different forward passes
    differ too). Outputs are rounded to 5 significant digits, so float reassociation on
    another device does not change the identity."""
    import jax
    import numpy as np

    from batchlab.data.dataset import array_digest

    params, state = model.init(jax.random.PRNGKey(0))
    leaves, treedef = jax.tree.flatten((params, state))
    logits, _ = model.apply(params, state, dataset.x_train[:16], train=False, key=None)
    rounded = np.asarray(logits, np.float64)
    scale = 10.0 ** (4 - np.floor(np.log10(np.maximum(np.abs(rounded), 1e-30))))
    rounded = np.round(rounded * scale) / scale
    return array_digest(np.frombuffer(str(treedef).encode(), np.uint8), *map(np.asarray, leaves), rounded)[:32]


def check_model_config(cfg: ModelConfig) -> None:
    """A built-in model's options are valid; a model given as code (``custom:`` object or
    ``import:`` path) has none to check here."""
    if cfg.name.startswith(("custom:", "import:")):
        return
    if cfg.name not in MODELS:
        raise BatchlabError(f"unknown model {cfg.name!r}: choose one of {', '.join(MODELS)}, "
                            f"or give your own as file.py:function")
    if cfg.activation not in ACTIVATIONS:
        raise BatchlabError(f"unknown activation {cfg.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    if cfg.init not in INITIALIZERS:
        raise BatchlabError(f"unknown init {cfg.init!r}: choose one of {', '.join(INITIALIZERS)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise BatchlabError(f"dropout rate must lie in [0, 1), got {cfg.dropout}")
    if cfg.norm != "none" and cfg.name not in ("mlp", "cnn"):
        raise BatchlabError(f"--norm {cfg.norm} applies to mlp and cnn, not {cfg.name}")
    if (cfg.norm == "ghost") != (cfg.ghost_size is not None):
        raise BatchlabError("ghost batch norm needs --ghost-size, and --ghost-size needs --norm ghost")


@functools.lru_cache(maxsize=64)
def build_model(cfg: ModelConfig, sample_shape: tuple[int, ...], num_classes: int,
                task: str = "classification") -> Model:
    """The built-in model a :class:`ModelConfig` names, shaped for the data (``num_classes``:
    classes, or regression outputs). Built once per process, so every cohort (and study grid)
    of one model shares its compiled programs."""
    check_model_config(cfg)
    if cfg.name == "logreg":
        model = logreg(sample_shape, num_classes)
    elif cfg.name == "mlp":
        model = mlp(sample_shape, num_classes, cfg.hidden, cfg.activation, cfg.init, cfg.dropout, cfg.norm,
                    cfg.ghost_size)
    else:
        shape = image_shape(sample_shape)
        if shape is None:
            raise BatchlabError(f"model 'cnn' needs image samples (HxW or HxWxC); this data has shape {sample_shape}")
        model = cnn(shape, num_classes, cfg.activation, cfg.init, cfg.dropout, cfg.norm, cfg.ghost_size)
    return describe(model._replace(task=task), (cfg, tuple(sample_shape), num_classes, task))
