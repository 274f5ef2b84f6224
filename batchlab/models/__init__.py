"""Models: what the engine sees of a model (``base.Model``, a pair of pure functions), the
built-in ones (``catalog.py`` names them, ``builtin.py`` builds them), the losses, and adapters
of other frameworks' models (``adapters/``).

The package imports JAX only when one of these names is used, so the command line can list
the built-in models (``catalog.MODELS``) without loading it.
"""

from __future__ import annotations

import importlib

from batchlab.models.catalog import MODELS

_LAZY = {"Model": "base", "build_model": "builtin", "check_model_config": "builtin", "describe": "builtin",
         "description": "builtin", "fingerprint": "builtin"}

__all__ = ["Model", "MODELS", "build_model", "check_model_config", "describe", "description", "fingerprint"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"batchlab.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'batchlab.models' has no attribute {name!r}")
