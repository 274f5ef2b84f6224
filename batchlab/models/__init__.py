"""Built-in models, each an ``init``/``apply`` pair (:class:`Model`)."""

from __future__ import annotations

from batchlab.config import ModelConfig
from batchlab.errors import BatchlabError
from batchlab.models.base import ACTIVATIONS, INITIALIZERS, Model
from batchlab.models.cnn import cnn, image_shape
from batchlab.models.logreg import logreg
from batchlab.models.mlp import mlp

MODELS = ("mlp", "logreg", "cnn")

__all__ = ["Model", "MODELS", "build_model", "check_model_config"]


def check_model_config(cfg: ModelConfig) -> None:
    if cfg.name not in MODELS:
        raise BatchlabError(f"unknown model {cfg.name!r}: choose one of {', '.join(MODELS)}")
    if cfg.activation not in ACTIVATIONS:
        raise BatchlabError(f"unknown activation {cfg.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
    if cfg.init not in INITIALIZERS:
        raise BatchlabError(f"unknown init {cfg.init!r}: choose one of {', '.join(INITIALIZERS)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise BatchlabError(f"dropout rate must lie in [0, 1), got {cfg.dropout}")


def build_model(cfg: ModelConfig, sample_shape: tuple[int, ...], num_classes: int) -> Model:
    """The built-in model a :class:`ModelConfig` names, shaped for the data."""
    check_model_config(cfg)
    if cfg.name == "logreg":
        return logreg(sample_shape, num_classes)
    if cfg.name == "mlp":
        return mlp(sample_shape, num_classes, cfg.hidden, cfg.activation, cfg.init, cfg.dropout)
    shape = image_shape(sample_shape)
    if shape is None:
        raise BatchlabError(f"model 'cnn' needs image samples (HxW or HxWxC); this data has shape {sample_shape}")
    return cnn(shape, num_classes, cfg.activation, cfg.init, cfg.dropout)
