"""Named studies: each a declaration (``base.Study``) in its own module, run by ``runner.run_study``;
each study's analysis and findings are in ``batchlab/analysis/`` under the same module name.

The registry maps a study's name to the module that declares it as ``STUDY``; modules are
imported only when a study is used.
"""

from __future__ import annotations

import importlib

from batchlab.errors import BatchlabError

REGISTRY = {
    "brownlee": "brownlee",
    "gradient-norm": "gradient_norm",
    "distance": "distance",
    "lr-recovery": "lr_recovery",
    "optimizer": "optimizer",
    "generalization": "generalization",
    "convex": "convex",
    "epochs": "epochs",
    "critical-batch": "critical_batch",
    "throughput": "throughput",
    "regularization": "regularization",
}


def get_study(name: str):
    """The :class:`~batchlab.studies.base.Study` called ``name``."""
    if name not in REGISTRY:
        raise BatchlabError(f"unknown study {name!r}: choose one of {', '.join(REGISTRY)} (or 'all', 'list')")
    return importlib.import_module(f"batchlab.studies.{REGISTRY[name]}").STUDY


def available() -> list[str]:
    """Names of the studies whose module exists."""
    import importlib.util

    return [name for name, module in REGISTRY.items()
            if importlib.util.find_spec(f"batchlab.studies.{module}") is not None]
