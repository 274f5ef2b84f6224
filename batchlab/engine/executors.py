"""Where cohorts run: in this process (``local``, the default: one thread per core,
``engine/parallel.py``), in worker processes, or as Ray tasks on a running cluster
(``address``) or a local Ray started for the command.

Threads share the imports, the data and every compiled program, so they start at once; on
this 2-core machine the 180-run digits sweep trained in 4.2 s in two threads against 8.2 s in
one (programs compiled). Worker processes each import JAX and trace their own programs, which
cost about 2.5 s more for that sweep; they remain for isolation, and end with the command
however it ends (``parallel.in_processes``). Workers rebuild the data and model from the
runs' configs (a model given as a Python object cannot be rebuilt: give it as
``file.py:function``) and send back finished runs; only the driver writes the store. On a
cluster, batchlab must be installed on the nodes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from typing import Callable, Iterator, Sequence

from batchlab.config import RunConfig
from batchlab.engine.backends import plan, train_cohort, train_cohorts
from batchlab.engine.parallel import in_processes
from batchlab.errors import BatchlabError
from batchlab.results import RunResult

EXECUTORS = ("auto", "local", "processes", "ray")
Progress = Callable[[int], None]  # called with the number of run-epochs just completed
_cache: dict = {}


def check_executor(executor: str, workers: int | None, address: str | None, configs: Sequence[RunConfig]) -> None:
    """Refuse, before anything trains, an executor that cannot run these runs."""
    if executor not in EXECUTORS:
        raise BatchlabError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BatchlabError(f"workers must be an integer >= 1, got {workers!r}")
    if address is not None and executor != "ray":
        raise BatchlabError("--address names a Ray cluster: use it with --backend ray")
    if executor in ("processes", "ray"):
        custom = next((c.model.name for c in configs if c.model.name.startswith("custom:")), None)
        if custom is not None:
            raise BatchlabError(f"model {custom[len('custom:'):]!r} was given as a Python object and cannot be "
                                f"rebuilt by a worker: give it as file.py:function, or use the local executor")
    if executor == "ray":
        check_ray_address(address)


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


def train_job(cohort: list[RunConfig], shapes: dict | None = None, checkpoints: tuple[int, ...] = ()
              ) -> list[RunResult]:
    """Train one cohort from its configs alone (what a worker runs), with the programs the
    driver planned for it (``shapes``)."""
    dataset, model = _data_and_model(cohort[0])
    results = train_cohort(cohort, dataset, model, shapes=shapes, checkpoints=checkpoints)
    if not checkpoints:
        for result in results:
            result.params = None  # not needed by the driver; keeps the transfer small
    return results


def run_cohorts(cohorts: list[list[RunConfig]], dataset, model, *, executor: str = "auto",
                workers: int | None = None, address: str | None = None, progress: Progress | None = None,
                checkpoints: tuple[int, ...] = (), grid: list[list[RunConfig]] | None = None
                ) -> Iterator[list[RunResult]]:
    """Yield each cohort's results as it finishes (in this process with ``dataset`` and
    ``model``, or in workers that rebuild them); ``grid``: every cohort of the command, stored
    ones included, over which programs are planned (default: ``cohorts``). ``workers``:
    threads (``local``), processes or Ray tasks side by side (default: one per core; Ray: at
    most 2). ``progress`` counts run-epochs: epoch by epoch here, cohort by cohort in workers."""
    if executor in ("auto", "local"):
        yield from train_cohorts(cohorts, dataset, model, on_epoch=lambda cohort: epoch_counter(progress, len(cohort)),
                                 checkpoints=checkpoints, grid=grid, threads=workers)
        return
    shapes = plan(cohorts, dataset, model, compile_now=False, grid=grid)
    jobs = [(cohort, planned, checkpoints) for cohort, planned in zip(cohorts, shapes)]
    if executor == "ray":
        finished = _ray_cohorts(jobs, address, workers or min(os.cpu_count() or 1, 2))
    else:
        finished = _process_cohorts(jobs, workers)
    for cohort, results in finished:
        if progress:
            progress(sum(c.epochs for c in cohort))
        yield results


def epoch_counter(progress: Progress | None, runs: int) -> Callable[[int], None] | None:
    """Turn a cohort's 'epoch e finished' into run-epochs completed (early stops jump ahead)."""
    if progress is None:
        return None
    last = [0]

    def on_epoch(epoch: int) -> None:
        progress((epoch - last[0]) * runs)
        last[0] = epoch

    return on_epoch


def _process_cohorts(jobs: list[tuple], workers: int | None) -> Iterator[tuple[list[RunConfig], list[RunResult]]]:
    for index, results in in_processes(train_job, jobs, workers):
        yield jobs[index][0], results


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


# What a gRPC server (a Ray head's GCS, or a Ray client server) sends first: an HTTP/2
# SETTINGS frame in answer to the HTTP/2 client preface. Anything else at the address (a web
# server, a database) is not a Ray cluster, and Ray would retry it for minutes.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def check_ray_address(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, naming the address, when nothing that could be a Ray
    cluster answers there (Ray itself retries for minutes). ``None`` (a local Ray) and ``auto``
    are not checked."""
    import socket

    if address is None or address == "auto":
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(HTTP2_PREFACE)
            first = conn.recv(9)
    except OSError as exc:
        raise BatchlabError(f"no Ray cluster answers at {address} within {timeout:g} s "
                            f"({exc.strerror or exc}); start one there or leave out --address for a local Ray") \
            from None
    if len(first) < 4 or first[3] != SETTINGS_FRAME:
        raise BatchlabError(f"{address} answers, but not as a Ray cluster does (no gRPC server there); "
                            "give the head node's GCS port (ray start --head prints it)")


@contextlib.contextmanager
def _stderr_held_back() -> Iterator[None]:
    """Ray's core writes each failed attempt to join to file descriptor 2 (some twenty lines
    before it gives up): hold them back while joining, the failure is reported in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _loopback_only(ray) -> Iterator[None]:
    """Keep a Ray on this machine on the loopback address. Ray otherwise advertises this
    machine's network address (even for 127.0.0.1, so that other machines could join) and its
    servers listen on every interface. Ray turns that off on laptops (macOS, Windows) through one
    switch, read by the driver and inherited by the processes ``ray.init`` starts."""
    import ray._private.ray_constants as ray_constants

    saved = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


def _join_cluster(ray, address: str, common: dict) -> None:
    """``ray.init(address)`` with one line, not a traceback, when the cluster turns us away."""
    check_ray_address(address)
    local = _host_port(address)[0] in LOOPBACK_NAMES
    try:
        with _loopback_only(ray) if local else contextlib.nullcontext(), _stderr_held_back():
            ray.init(address=address, **common)
    except (ConnectionError, RuntimeError) as exc:
        while exc.__cause__ is not None:  # Ray wraps the reason (a missing token, say) twice
            exc = exc.__cause__
        lines = [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        # a reason that carries a remote traceback as text ends with its exception's line
        reason = lines[-1] if "Traceback (most recent call last)" in str(exc) else lines[0]
        reason = reason.split(". ")[0].split("Error: ", 1)[-1].strip()
        hint = (" (a cluster with token authentication: set RAY_AUTH_MODE=token and give its token in "
                "RAY_AUTH_TOKEN)" if "token" in reason.lower() else "")
        raise BatchlabError(f"could not join the Ray cluster at {address}: {reason}{hint}") from None


def _ray_init(ray, address: str | None, workers: int) -> None:
    """Connect to the cluster at ``address``, or start a local Ray on the loopback address."""
    common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    on_sigterm = signal.getsignal(signal.SIGTERM)
    with warnings.catch_warnings():
        # Ray starts its servers with subprocess, which forks and at once executes another
        # program: JAX's warning about forking a multithreaded process does not apply
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        if address:
            _join_cluster(ray, address, common)
        else:
            # a local Ray turns token authentication on and says so at every start; on the
            # loopback address only, that note is noise for a sweep's output
            notes = logging.getLogger("ray._private.authentication.authentication_token_setup")
            level = notes.level
            notes.setLevel(logging.ERROR)
            try:
                with _loopback_only(ray):
                    ray.init(num_cpus=workers, _node_ip_address=LOOPBACK, **common)
            finally:
                notes.setLevel(level)
    if on_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)  # ray.init made SIGTERM a sys.exit: keep the caller's handler


def ray_resources(ray, cohort: list[RunConfig]) -> dict:
    """What one cohort's task asks Ray for: a CPU, and on a cluster with GPUs one GPU per device
    its batches are split over (``--devices``), so Ray runs as many cohorts at once as there
    are GPUs to give each its own, and JAX in the task sees exactly those (Ray sets
    ``CUDA_VISIBLE_DEVICES``). A cohort that no node could hold is refused rather than left
    waiting for ever."""
    if not ray.cluster_resources().get("GPU", 0):
        return {"num_cpus": 1}  # CPU devices (--xla_force_host_platform_device_count) live inside the task's process
    devices = cohort[0].devices
    largest = max(node["Resources"].get("GPU", 0) for node in ray.nodes() if node.get("Alive"))
    if devices > largest:
        raise BatchlabError(f"a cohort splits its batches over {devices} GPUs; the largest node of this Ray cluster "
                            f"has {largest:g}")
    return {"num_cpus": 1, "num_gpus": devices}


def _ray_cohorts(jobs: list[tuple], address: str | None, workers: int
                 ) -> Iterator[tuple[list[RunConfig], list[RunResult]]]:
    try:
        import ray
    except ImportError:
        raise BatchlabError("the ray executor needs Ray: pip install 'batchlab[ray]'") from None
    started = not ray.is_initialized()
    if started:
        _ray_init(ray, address, workers)
    try:
        task = ray.remote(train_job)
        pending = {task.options(**ray_resources(ray, job[0])).remote(*job): job[0] for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cohort = pending.pop(done[0])
            yield cohort, ray.get(done[0])
    finally:
        if started:
            ray.shutdown()
