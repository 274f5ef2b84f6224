"""Data layer: built-in datasets, user files and arrays, all turned into a validated :class:`Dataset`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from batchlab.config import TASKS, DataConfig
from batchlab.data.builtin import BUILTIN, builtin_arrays, builtin_task, prepared_builtin
from batchlab.data.dataset import Dataset, array_digest, make_dataset, split, standardize
from batchlab.data.files import file_sha256, read_csv, read_npz
from batchlab.errors import BatchlabError
from batchlab.profiling import timed

__all__ = ["Dataset", "DataConfig", "load_dataset", "resolve_data_config", "from_arrays", "BUILTIN"]


def resolve_data_config(name: str, *, standardize: bool | None = None, test_fraction: float = 0.2,
                        split_seed: int = 0, label: str = "label", task: str | None = None) -> DataConfig:
    """Fill in the dataset's defaults and, for a file, its content hash. ``task``: a built-in
    set's own by default, classification for a file unless told otherwise."""
    if task is not None and task not in TASKS:
        raise BatchlabError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if name in BUILTIN:
        std = BUILTIN[name][1] if standardize is None else standardize
        task = task or builtin_task(name)
        if task != builtin_task(name):
            raise BatchlabError(f"built-in data {name!r} is a {builtin_task(name)} problem, not {task}")
        return DataConfig(name, std, test_fraction, split_seed, label, task=task)
    path = Path(name)
    if path.suffix.lower() not in (".npz", ".csv"):
        raise BatchlabError(f"unknown data {name!r}: use a built-in name ({', '.join(BUILTIN)}) or a .npz/.csv file")
    from batchlab.data.files import check_file

    check_file(path)
    return DataConfig(str(path), bool(standardize), test_fraction, split_seed, label, file_sha256(path),
                      task or "classification")


def _prepare(name: str, arrays: tuple, cfg: DataConfig) -> Dataset:
    """Split (when no test set is given), validate and standardize; the dataset's notes say
    what reading the arrays changed."""
    notes: list[str] = []
    if len(arrays) == 2:
        arrays = tuple(split(name, arrays[0], arrays[1], cfg.test_fraction, cfg.split_seed, notes, cfg.task))
        x_train, x_test, y_train, y_test = arrays
    else:
        x_train, y_train, x_test, y_test = arrays
    ds = make_dataset(name, x_train, y_train, x_test, y_test, notes=tuple(notes), task=cfg.task)
    return standardize(ds) if cfg.standardize else ds


@timed("data")
def load_dataset(cfg: DataConfig) -> Dataset:
    """Load and validate the data a :class:`DataConfig` names."""
    if cfg.name in BUILTIN:
        # Built-in sets are batchlab's own (their layout is documented): no notes to print.
        return prepared_builtin(cfg, lambda: replace(_prepare(cfg.name, builtin_arrays(cfg.name), cfg), notes=()))
    path = Path(cfg.name)
    arrays = read_npz(path) if path.suffix.lower() == ".npz" else read_csv(path, cfg.label)
    return _prepare(path.name, arrays, cfg)


def from_arrays(x, y, x_test=None, y_test=None, *, name: str = "arrays", standardize: bool = False,
                test_fraction: float = 0.2, split_seed: int = 0, task: str = "classification"
                ) -> tuple[Dataset, DataConfig]:
    """A Dataset from the user's own numpy arrays (Python API); the config carries their hash."""
    if task not in TASKS:
        raise BatchlabError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    parts = (x, y) if x_test is None else (x, y, x_test, y_test)
    cfg = DataConfig(name, standardize, test_fraction, split_seed, file_sha256=array_digest(*parts), task=task)
    return _prepare(name, parts, cfg), cfg

