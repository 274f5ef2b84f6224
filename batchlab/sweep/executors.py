"""Where cohorts run: in this process, or in worker processes (one per core by default).

Workers rebuild the data and model from the runs' configs and send back finished runs;
only the driver writes the store. On this 2-core machine two single-threaded processes gave
about twice the throughput of one (``design.md``), so ``processes`` is the default when a
sweep has at least two cohorts and the machine two cores.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterator

from batchlab.config import RunConfig
from batchlab.engine.cohort import RunResult, train_cohort

EXECUTORS = ("auto", "local", "processes")
_cache: dict = {}


def _data_and_model(cfg: RunConfig):
    """Dataset and model of a config, loaded once per process."""
    from batchlab.data import load_dataset
    from batchlab.models import build_model

    key = (cfg.data, cfg.model)
    if key not in _cache:
        dataset = load_dataset(cfg.data)
        _cache[key] = dataset, build_model(cfg.model, dataset.sample_shape, dataset.num_classes)
    return _cache[key]


def train_job(cohort: list[RunConfig]) -> list[RunResult]:
    """Train one cohort from its configs alone (what a worker runs)."""
    dataset, model = _data_and_model(cohort[0])
    results = train_cohort(cohort, dataset, model)
    for result in results:
        result.params = None  # not needed by the driver; keeps the transfer small
    return results


def run_cohorts(cohorts: list[list[RunConfig]], executor: str = "auto", workers: int | None = None,
                on_epochs: Callable[[int], None] | None = None) -> Iterator[list[RunResult]]:
    """Yield each cohort's results as it finishes."""
    workers = workers or min(os.cpu_count() or 1, 2)
    if executor == "auto":
        executor = "processes" if (len(cohorts) >= 2 and workers >= 2) else "local"
    if executor == "local":
        for cohort in cohorts:
            results = train_job(cohort)
            if on_epochs:
                on_epochs(sum(c.epochs for c in cohort))
            yield results
        return
    context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(train_job, cohort): cohort for cohort in cohorts}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    cohort = pending.pop(future)
                    results = future.result()
                    if on_epochs:
                        on_epochs(sum(c.epochs for c in cohort))
                    yield results
        except BaseException:
            for future in pending:
                future.cancel()
            raise
