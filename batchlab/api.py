"""The Python API and the one path by which runs reach the store.

``batchlab.train(...)`` takes every setting of ``settings.py`` as a keyword (its signature
and docstring are made from the declaration), expands the grid into runs (``grid.py``),
trains them cohort by cohort and returns their records as pandas DataFrames. The ``train``
and ``sweep`` commands, config files and studies reach the store through the same
:func:`run_configs`, so a run's identity, data notes and records do not depend on which
command trained it.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from batchlab.config import DataConfig, RunConfig
from batchlab.data import Dataset, from_arrays, load_dataset, resolve_data_config
from batchlab.engine.executors import Progress, check_executor, run_cohorts
from batchlab.errors import BatchlabError
from batchlab.grid import check_model_memory, group_cohorts, runs_of
from batchlab.models import Model
from batchlab.results import RunResult
from batchlab.settings import TRAINING, read_given, training_defaults
from batchlab.store import Store, series_frame, summary_frame
from batchlab.version import __version__

if TYPE_CHECKING:  # the frames import pandas when asked for; a sweep never needs it
    import pandas as pd


@dataclass
class TrainResult:
    """The runs of one ``train`` call; ``skipped`` lists runs read back from the store."""

    runs: list[RunResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch records (epoch 0 included) of every run, with the run's settings as columns."""
        return series_frame(self.runs, "epoch")

    @property
    def steps(self) -> pd.DataFrame:
        """Per-step records (``mb_loss``, ``mb_acc`` and the instruments') of every run."""
        return series_frame(self.runs, "step")

    @property
    def summary(self) -> pd.DataFrame:
        """One row per run: final metrics, best epoch, updates, samples seen, wall time."""
        return summary_frame(self.runs)


def train(data: Any = "blobs", model: Any = "mlp", *, db: str | Path | None = None, force: bool = False,
          progress: Progress | None = None, **settings: Any) -> TrainResult:
    """Train every combination of the grid axes: batch size x optimizer x lr x momentum x
    weight decay x seeds (each of them takes a single value or a list).

    ``data`` is a built-in name, a ``.npz``/``.csv`` path, arrays ``(x, y)`` or
    ``(x, y, x_test, y_test)``, or a ``batchlab.data.Dataset``. ``model`` is a built-in name
    (``mlp``, ``logreg``, ``cnn``), an import path (``"my_models.py:make_model"``), a
    ``batchlab.Model``, a Flax (linen or NNX), Equinox, Keras 3 or PyTorch model, or a function
    returning one (``batchlab.models.adapters``). Every other setting is a keyword (listed
    below, from ``batchlab/settings.py``); ``early_stopping=EarlyStopping(...)`` is accepted
    for ``patience``, ``monitor``, ``min_delta`` and ``restore_best``.

    Runs that share a batch size train together as one vmapped cohort. With ``db`` the runs
    are stored (one transaction per cohort) and finished runs are read back instead of
    recomputed unless ``force``. ``progress(k)``: k more run-epochs are done.

    Example:
        >>> result = batchlab.train("blobs", "mlp", batch_size=32, epochs=200, lr=0.01, momentum=0.9, seeds=5)
        >>> result.history.groupby("epoch").test_acc.mean()
    """
    configs, dataset, net = prepare(data, model, **settings)
    return run_configs(configs, dataset, net, db=db, force=force, progress=progress)


def prepare(data: Any = "blobs", model: Any = "mlp", **settings: Any) -> tuple[list[RunConfig], Dataset, Model]:
    """Validate everything and resolve the runs before anything is trained or written."""
    values = {**training_defaults(), **read_given(dict(settings, data=data, model=model))}
    dataset, data_cfg = resolve_data(values["data"], standardize=values["standardize"],
                                     test_fraction=values["test_fraction"], label=values["label"], task=values["task"])
    # A built-in name, an import path ("file.py:make_model") or a model object (batchlab.Model,
    # Flax, Equinox, Keras, PyTorch, or a function returning one): see batchlab.models.resolve.
    from batchlab.models.resolve import model_options, resolve_model

    model_cfg, net = resolve_model(values["model"], dataset, **model_options(values))
    configs = runs_of(values, data_cfg, dataset.n_train, model_cfg)
    check_parameters(net, configs, dataset)
    return configs, dataset, net


def check_parameters(net: Model, configs: list[RunConfig], dataset: Dataset) -> None:
    """A JAX model's parameters and activations must fit in memory (counted from their shapes);
    a PyTorch module exists already, built by its own code (and splits its batches over devices
    its own way: ``torch.distributed``, see ``batchlab.monitor``)."""
    if getattr(net, "backend", "jax") != "jax" and any(c.devices > 1 for c in configs):
        raise BatchlabError("devices applies to JAX models (built-in, Flax, Equinox, Keras on JAX); a PyTorch model "
                            "is split over devices by torch.distributed in your own loop (batchlab.monitor)")
    if getattr(net, "backend", "jax") == "jax":
        import jax

        from batchlab.models.base import activation_count, parameter_count

        row = jax.ShapeDtypeStruct(dataset.x_train.shape[1:], dataset.x_train.dtype)
        check_model_memory(parameter_count(net), activation_count(net, row),
                           dataset.n_train + len(dataset.x_test), configs)


def resolve_data(data: Any, *, standardize: bool | None, test_fraction: float, label: str,
                 task: str | None = None) -> tuple[Dataset, DataConfig]:
    """A dataset from a built-in name, a file path, a tuple of arrays or a :class:`Dataset`;
    ``task`` (``classification`` or ``regression``): the data's own by default (a built-in
    set's, or classification)."""
    if isinstance(data, Dataset):
        if task is not None and task != data.task:
            raise BatchlabError(f"this Dataset is a {data.task} problem, not {task}")
        return data, DataConfig(data.name, False, file_sha256=data.fingerprint(), task=data.task)
    if isinstance(data, (tuple, list)):
        if len(data) not in (2, 4):
            raise BatchlabError("data arrays must be (x, y) or (x, y, x_test, y_test)")
        return from_arrays(*data, standardize=bool(standardize), test_fraction=test_fraction,
                           task=task or "classification")
    if not isinstance(data, str):
        raise BatchlabError(f"data must be a name, a file path or arrays, got {type(data).__name__}")
    cfg = resolve_data_config(data, standardize=standardize, test_fraction=test_fraction, label=label, task=task)
    return load_dataset(cfg), cfg


def run_configs(configs: list[RunConfig], dataset: Dataset, net: Model, *, db: str | Path | None = None,
                force: bool = False, progress: Progress | None = None, checkpoints: tuple[int, ...] = (),
                executor: str = "auto", workers: int | None = None, address: str | None = None,
                grid: list[RunConfig] | None = None, collect: bool = True,
                before: Callable[[Store], None] | None = None) -> TrainResult:
    """Train the configs cohort by cohort (``executor``: in this process, worker processes or
    Ray, ``engine/executors.py``); store each cohort as it finishes, with what the data layer
    changed in the user's data (``dataset.notes``).

    The store is checked for writing before the first cohort trains, so no work is done that
    could not be kept; ``before(store)`` records more there first (a sweep's grid). Runs
    already stored are read back unless ``force``. ``checkpoints``: epochs whose parameters
    the fresh runs keep. ``grid``: every run of the command, over which compiled programs are
    planned (default: ``configs``). Without ``collect`` the runs are only stored
    (``TrainResult.runs`` is empty): a long sweep keeps no records in memory.
    """
    check_executor(executor, workers, address, configs)
    with _open_store(db, before) as store:
        done = store.run_ids() if (store is not None and not force) else set()
        skipped = [c.run_id for c in configs if c.run_id in done]
        if progress is not None and skipped:
            progress(sum(c.epochs for c in configs if c.run_id in done))
        notes = list(getattr(dataset, "notes", ()) or ())
        fresh: dict[str, RunResult] = {}
        for results in run_cohorts(group_cohorts([c for c in configs if c.run_id not in done]), dataset, net,
                                   executor=executor, workers=workers, address=address, progress=progress,
                                   checkpoints=checkpoints, grid=group_cohorts(grid or configs)):
            if store is not None:
                store.write(results, __version__, notes={r.run_id: notes for r in results} if notes else None)
            if collect:
                fresh.update((r.run_id, r) for r in results)
        if not collect:
            return TrainResult([], skipped)
        stored = {r.run_id: r for r in store.load(skipped)} if (store is not None and skipped) else {}
        return TrainResult([fresh.get(c.run_id) or stored[c.run_id] for c in configs], skipped)


@contextmanager
def _open_store(db: str | Path | None, before: Callable[[Store], None] | None) -> Iterator[Store | None]:
    """The store at ``db`` (None: nothing is stored), proven writable, ``before`` applied."""
    if db is None:
        yield None
        return
    with Store(db) as store:
        store.check_writable()
        if before is not None:
            before(store)
        yield store


def _signature() -> inspect.Signature:
    """``train``'s signature: data and model, then every setting of the declaration as a
    keyword with its default, then ``db``, ``force`` and ``progress``."""
    own = inspect.signature(train).parameters
    settings = [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=s.default)
                for s in TRAINING if s.name not in ("data", "model")]
    return inspect.Signature([own["data"], own["model"], *settings, own["db"], own["force"], own["progress"]])


def _settings_doc() -> str:
    lines = ["", "    Settings (``batchlab/settings.py``):"]
    lines += [f"        {s.name}: {s.describe()}" for s in TRAINING if s.name not in ("data", "model")]
    return "\n".join(lines) + "\n"


train.__signature__ = _signature()  # type: ignore[attr-defined]
train.__doc__ = (train.__doc__ or "") + _settings_doc()

__all__ = ["train", "TrainResult", "prepare", "run_configs", "resolve_data"]
