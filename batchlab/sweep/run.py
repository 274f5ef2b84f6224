"""Run a sweep: expand it, record it in the store, train what is not stored yet, cohort by cohort.

Crash safety comes from the store: each finished cohort is one transaction, and re-running
the same sweep skips finished runs and recomputes the ones that were in flight. The runs
reach the store by the one path every command uses (``api.run_configs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchlab.api import check_parameters, resolve_data, run_configs
from batchlab.config import RunConfig
from batchlab.data import Dataset
from batchlab.engine.executors import Progress
from batchlab.errors import BatchlabError
from batchlab.models import Model
from batchlab.store import Store
from batchlab.sweep.spec import SweepSpec, expand


@dataclass
class SweepRun:
    name: str
    run_ids: list[str]
    trained: int
    skipped: int
    total_epochs: int


def prepare_sweep(spec: SweepSpec) -> tuple[list[RunConfig], Dataset, Model]:
    """Validate the spec and resolve its runs, data and model (nothing is trained or written)."""
    from batchlab.models.resolve import model_options, resolve_model

    v = spec.values()
    dataset, data_cfg = resolve_data(v["data"], standardize=v["standardize"], test_fraction=v["test_fraction"],
                                     label=v["label"], task=v["task"])
    # A built-in name or an import path (file.py:make_model), checked against the data here.
    model_cfg, net = resolve_model(v["model"], dataset, **model_options(v))
    configs = expand(spec, data_cfg, model_cfg, dataset.n_train)
    check_parameters(net, configs, dataset)
    return configs, dataset, net


def plan_sweep(spec: SweepSpec) -> list[RunConfig]:
    """The sweep's runs, resolved and validated."""
    return prepare_sweep(spec)[0]


def run_sweep(spec: SweepSpec, db: str | Path, *, executor: str = "auto", workers: int | None = None,
              address: str | None = None, progress: Progress | None = None,
              prepared: tuple[list[RunConfig], Dataset, Model] | None = None) -> SweepRun:
    """Validate everything (settings, executor, store, cluster), record the sweep, then train
    what is not stored yet; each finished cohort is stored at once. ``prepared``: what
    :func:`prepare_sweep` returned, when the caller has it already."""
    configs, dataset, net = prepared or prepare_sweep(spec)
    run_ids = [c.run_id for c in configs]

    def record(store: Store) -> None:
        check_same_grid(store, spec.name, run_ids)
        store.write_sweep(spec.name, spec.to_dict(), run_ids)

    result = run_configs(configs, dataset, net, db=db, progress=progress, executor=executor, workers=workers,
                         address=address, collect=False, before=record)
    todo = [c for c in configs if c.run_id not in set(result.skipped)]
    return SweepRun(spec.name, run_ids, len(todo), len(result.skipped), sum(c.epochs for c in todo))


def check_same_grid(store: Store, name: str, run_ids: list[str]) -> None:
    """A sweep name keeps its runs: re-running it with the same grid resumes it; a different
    grid is refused (it would silently drop the earlier runs from ``analyze``)."""
    if name not in store.sweeps():
        return
    before = set(store.sweep_run_ids(name))
    if before == set(run_ids):
        return
    added, dropped = len(set(run_ids) - before), len(before - set(run_ids))
    raise BatchlabError(f"sweep {name!r} already exists in {store.path} with a different grid "
                        f"({added} run(s) new, {dropped} of its runs left out); give this grid its own name "
                        f"with --name NEW_NAME, or re-run the sweep's own settings to resume it")
