"""Run a sweep: expand it, record it in the store, train what is not stored yet, cohort by cohort.

Crash safety comes from the store: each finished cohort is one transaction, and re-running
the same sweep skips finished runs and recomputes the ones that were in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from batchlab import __version__
from batchlab.analysis.targets import parse_target
from batchlab.api import check_store_writable, group_cohorts
from batchlab.data import load_dataset, resolve_data_config
from batchlab.models.resolve import resolve_model
from batchlab.store import Store
from batchlab.sweep.executors import EXECUTORS, check_ray_address, run_cohorts
from batchlab.sweep.grid import SweepSpec, expand
from batchlab.errors import BatchlabError


@dataclass
class SweepRun:
    name: str
    run_ids: list[str]
    trained: int
    skipped: int
    total_epochs: int


def plan_sweep(spec: SweepSpec):
    """Validate the spec and resolve its runs (nothing is trained or written)."""
    parse_target(spec.target)
    data_cfg = resolve_data_config(spec.data)
    dataset = load_dataset(data_cfg)
    # A built-in name or an import path (file.py:make_model), checked against the data here.
    model_cfg, _ = resolve_model(spec.model, dataset, hidden=spec.hidden)
    return expand(spec, data_cfg, model_cfg, dataset.n_train)


def run_sweep(spec: SweepSpec, db: str | Path, *, executor: str = "auto", workers: int | None = None,
              address: str | None = None, progress: Callable[[int], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> SweepRun:
    """Validate everything (settings, executor, store, cluster), record the sweep, then train
    what is not stored yet; each finished cohort is stored at once."""
    if executor not in EXECUTORS:
        raise BatchlabError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BatchlabError(f"workers must be an integer >= 1, got {workers!r}")
    if address is not None and executor != "ray":
        raise BatchlabError("--address names a Ray cluster: use it with --backend ray")
    configs = plan_sweep(spec)
    if executor == "ray":
        check_ray_address(address)
    run_ids = [c.run_id for c in configs]
    with Store(db) as store:
        check_store_writable(store)
        check_same_grid(store, spec.name, run_ids)
        store.write_sweep(spec.name, spec.to_dict(), run_ids)
        done = store.run_ids()
    todo = [c for c in configs if c.run_id not in done]
    if on_start is not None:
        on_start(sum(c.epochs for c in todo))
    for results in run_cohorts(group_cohorts(todo), executor, workers, on_epochs=progress, address=address,
                               grid=group_cohorts(configs)):
        with Store(db) as store:
            store.write(results, __version__)
    return SweepRun(spec.name, run_ids, len(todo), len(configs) - len(todo), sum(c.epochs for c in todo))


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
