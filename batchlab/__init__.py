"""batchlab: see, measure and choose batch size, epochs and learning rate."""

from batchlab.runtime import configure_threads

configure_threads()  # before jax is imported anywhere in batchlab

from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.version import __version__  # noqa: E402

# The training API (and with it JAX) is imported on first use, so code that only reads a store
# (``batchlab runs``, ``export``, ``analyze``, ``report``, ``batchlab.store``) never loads it.
_LAZY = {"train": "batchlab.api", "advise": "batchlab.advisor", "Advice": "batchlab.advisor", "TrainResult": "batchlab.api", "plan": "batchlab.budget",
         "EarlyStopping": "batchlab.config", "Model": "batchlab.models"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"batchlab.{name}")  # a submodule, e.g. batchlab.api
    except ModuleNotFoundError as exc:
        if exc.name != f"batchlab.{name}":
            raise  # the submodule exists but something it imports is missing
        raise AttributeError(f"module 'batchlab' has no attribute {name!r}") from None


def study(name: str, *, quick: bool = False, db: str = "batchlab.db", out: str | None = None, force: bool = False,
          **settings):
    """Run the study ``name`` (see ``batchlab study list``); keyword settings override its defaults.

    Returns a ``StudyResult``: ``.findings`` (claims with measured numbers and verdicts),
    ``.tables`` (DataFrames behind the figures), ``.files``. Example:
    ``batchlab.study("distance", quick=True).findings``.
    """
    from batchlab.studies import get_study
    from batchlab.studies.runner import run_study

    return run_study(get_study(name), quick=quick, overrides=settings, db=db, out=out, force=force)


__all__ = ["train", "advise", "Advice", "study", "TrainResult", "plan", "EarlyStopping", "BatchlabError", "Model", "__version__"]
