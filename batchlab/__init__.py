"""batchlab: see, measure and choose batch size, epochs and learning rate."""

from batchlab.engine.runtime import configure_threads

configure_threads()  # before jax is imported anywhere in batchlab

__version__ = "0.2.0"

from batchlab.api import TrainResult, train  # noqa: E402
from batchlab.budget import plan  # noqa: E402
from batchlab.config import EarlyStopping  # noqa: E402
from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.models import Model  # noqa: E402


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


__all__ = ["train", "study", "TrainResult", "plan", "EarlyStopping", "BatchlabError", "Model", "__version__"]
