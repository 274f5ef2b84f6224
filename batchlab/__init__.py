"""batchlab: see, measure and choose batch size, epochs and learning rate."""

from batchlab.engine.runtime import configure_threads

configure_threads()  # before jax is imported anywhere in batchlab

__version__ = "0.1.0"

from batchlab.api import TrainResult, train  # noqa: E402
from batchlab.budget import plan  # noqa: E402
from batchlab.config import EarlyStopping  # noqa: E402
from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.models import Model  # noqa: E402

__all__ = ["train", "TrainResult", "plan", "EarlyStopping", "BatchlabError", "Model", "__version__"]
