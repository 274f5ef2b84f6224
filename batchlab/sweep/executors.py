"""Where cohorts run: in this process (``local``, the default: one thread per core,
``engine/parallel.py``), in worker processes, or as Ray tasks on a running cluster
(``address``) or a local Ray started for the sweep.

Threads share the imports, the data and every compiled program, so they start at once; on
this 2-core machine the 180-run digits sweep trained in 4.2 s in two threads against 8.2 s in
one (programs compiled). Worker processes each import JAX and trace their own programs, which
cost about 2.5 s more for that sweep; they remain for isolation. Workers rebuild the data and
model from the runs' configs and send back finished runs; only the driver writes the store.
On a cluster, batchlab must be installed on the nodes.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import partial
from typing import Callable, Iterator

from batchlab.config import RunConfig
from batchlab.engine.backends import backend_of, cancel_pending, plan, train_cohort
from batchlab.engine.parallel import in_threads
from batchlab.results import RunResult
from batchlab.errors import BatchlabError

EXECUTORS = ("auto", "local", "processes", "ray")
_cache: dict = {}


def _data_and_model(cfg: RunConfig):
    """Dataset and model of a config, loaded once per process (a model given by import path is
    imported here too, and must still have the fingerprint the runs were planned with)."""
    from batchlab.data import load_dataset
    from batchlab.models.resolve import model_for_config

    key = (cfg.data, cfg.model)
    if key not in _cache:
        dataset = load_dataset(cfg.data)
        _cache[key] = dataset, model_for_config(cfg.model, dataset)
    return _cache[key]


def train_job(cohort: list[RunConfig], shapes: dict | None = None) -> list[RunResult]:
    """Train one cohort from its configs alone (what a worker runs), with the programs the
    driver planned for it (``shapes``)."""
    dataset, model = _data_and_model(cohort[0])
    results = train_cohort(cohort, dataset, model, shapes=shapes)
    for result in results:
        result.params = None  # not needed by the driver; keeps the transfer small
    return results


def _planned(cohorts: list[list[RunConfig]], compile_now: bool, grid: list[list[RunConfig]] | None
             ) -> list[dict | None]:
    """The planned programs of each cohort, planned per dataset and model over the sweep's
    whole ``grid`` (batch sizes share programs across cohorts: ``engine/programs.py``)."""
    def kind(cohort):
        return cohort[0].data, cohort[0].model

    grid = cohorts if grid is None else grid
    shapes: list[dict | None] = [None] * len(cohorts)
    for key in dict.fromkeys(map(kind, cohorts)):
        members = [i for i, cohort in enumerate(cohorts) if kind(cohort) == key]
        dataset, model = _data_and_model(cohorts[members[0]][0])
        planned = plan([cohorts[i] for i in members], dataset, model, compile_now,
                       grid=[cohort for cohort in grid if kind(cohort) == key])
        for i, shape in zip(members, planned):
            shapes[i] = shape
    return shapes


def run_cohorts(cohorts: list[list[RunConfig]], executor: str = "auto", workers: int | None = None,
                on_epochs: Callable[[int], None] | None = None, address: str | None = None,
                grid: list[list[RunConfig]] | None = None) -> Iterator[list[RunResult]]:
    """Yield each cohort's results as it finishes; ``grid``: every cohort of the sweep, stored
    ones included, over which programs are planned (default: ``cohorts``). ``workers``: threads
    (``local``), processes or Ray tasks side by side (default: one per core; Ray: at most 2)."""
    if workers is not None and workers < 1:
        raise BatchlabError(f"workers must be >= 1, got {workers}")
    if executor == "auto":
        executor = "local"
    shapes = _planned(cohorts, executor == "local", grid)
    if executor == "ray":
        yield from _ray_cohorts(cohorts, shapes, address, workers or min(os.cpu_count() or 1, 2), on_epochs)
        return
    if executor == "local":
        jobs = [partial(train_job, cohort, planned) for cohort, planned in zip(cohorts, shapes)]
        # PyTorch cohorts one after another: torch's random generator and threads are process-wide.
        torch = any(backend_of(_data_and_model(cohort[0])[1]) == "torch" for cohort in cohorts)
        try:
            for results in in_threads(jobs, 1 if torch else workers):
                if on_epochs:
                    on_epochs(sum(r.config.epochs for r in results))
                yield results
        finally:
            cancel_pending()
        return
    context = multiprocessing.get_context("spawn")  # JAX is not fork-safe
    pool = ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=context)
    try:
        pending = {pool.submit(train_job, cohort, planned): cohort for cohort, planned in zip(cohorts, shapes)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cohort = pending.pop(future)
                results = future.result()
                if on_epochs:
                    on_epochs(sum(c.epochs for c in cohort))
                yield results
    finally:  # on Ctrl-C or an error: drop queued cohorts, do not wait for them
        pool.shutdown(wait=False, cancel_futures=True)


CONNECT_TIMEOUT_S = 15  # how long a cluster address may take to answer before the sweep is refused
LOOPBACK = "127.0.0.1"  # a local Ray that batchlab starts listens here only, never on a network interface


def _host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``ray://HOST:PORT`` -> (host, port); anything else is a one-line error."""
    text = address.split("://", 1)[-1].strip().rstrip("/")
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BatchlabError(f"Ray address must be HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}")
    return host, int(port)


def check_ray_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, naming the address, when no cluster answers there
    (Ray itself retries for minutes). ``None`` (a local Ray) and ``auto`` are not checked."""
    import socket

    if address is None or address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise BatchlabError(f"no Ray cluster answers at {address} within {timeout:g} s "
                            f"({exc.strerror or exc}); start one there or leave out --address for a local Ray") \
            from None


def _ray_init(ray, address: str | None, workers: int) -> None:
    """Connect to the cluster at ``address``, or start a local Ray bound to the loopback address."""
    common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        check_ray_address(address)
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=workers, _node_ip_address=LOOPBACK, **common)


def _ray_cohorts(cohorts, shapes, address: str | None, workers: int, on_epochs) -> Iterator[list[RunResult]]:
    try:
        import ray
    except ImportError:
        raise BatchlabError("the ray executor needs Ray: pip install 'batchlab[ray]'") from None
    started = not ray.is_initialized()
    if started:
        _ray_init(ray, address, workers)
    try:
        task = ray.remote(num_cpus=1)(train_job)
        pending = {task.remote(cohort, planned): cohort for cohort, planned in zip(cohorts, shapes)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cohort = pending.pop(done[0])
            results = ray.get(done[0])
            if on_epochs:
                on_epochs(sum(c.epochs for c in cohort))
            yield results
    finally:
        if started:
            ray.shutdown()
