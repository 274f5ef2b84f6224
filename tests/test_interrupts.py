"""Issue 28, "never hang, always obey Ctrl-C", on the real entry point in fresh processes:

- a command whose cohorts ran in worker processes ends once its work is done (3 of 8
  ``sweep --executor processes`` used to hang at exit);
- SIGINT or SIGTERM at a random moment, the first second included, ends the command with
  exit 130 or 143 and one line saying what was stored and how to resume; never 0 (the
  interrupt used to be swallowed in the first ~1 s), never a crash, a traceback or a hang,
  and no process of the command left behind;
- a SIGKILLed command leaves no live worker, and nothing holds its stdout after it;
- the signal handler holds an interrupt back in the code that cannot take it, and stays the
  handler of SIGTERM after ``ray.init`` (unit tests).

The suite runs reduced counts, sized to fit its time budget (about 25 s together on 2 cores:
the repetitions run side by side). The issue's full counts are a separate stress command,
not part of the suite (about 3-5 minutes on 2 idle cores):

    python tests/test_interrupts.py [--exits 20] [--signals 30] [--kills 6]

Every bound on time here is a hang detector, not a speed requirement: it is 10-100 times what
the step takes on an idle machine (what a loaded 2-core machine needs), and says so.
"""

from __future__ import annotations

import contextlib
import gc
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from helpers import count_stored_runs

from batchlab.cli import interrupts
from batchlab.engine import executors

HANG_S = 60  # seconds after which a command that should have ended counts as hung (it takes 0.1-2 s)
SIDE_BY_SIDE = 3  # repetitions run at once (each mostly waits: imports, a timer, its exit)

# A pool of worker processes run to its end through the command's own exit path
# (``console_main``: the exit handlers, then ``os._exit``): what hung after a processes sweep.
POOL_THEN_EXIT = """
import operator, batchlab.cli as cli
from batchlab.engine.parallel import in_processes
cli.main = lambda: print(sorted(result for _, result in in_processes(operator.add, [(1, 2), (3, 4), (5, 6)], 2)))
cli.console_main()
"""


def _sweep(executor: str, db: Path) -> list[str]:
    """A sweep that trains for far longer than the moments at which it is interrupted (500k
    steps at B=1), each cohort in its own thread or worker."""
    return ["sweep", "--name", "k", "--data", "blobs", "--hidden", "8", "--batch-sizes", "1,full", "--lr", "0.05",
            "--seeds", "1", "--epochs", "1000", "--executor", executor, "--workers", "2", "--db", str(db)]


COMMANDS = {
    "train": lambda d: ["train", "--data", "blobs", "--hidden", "8", "--batch-size", "1,full", "--epochs", "1000",
                        "--db", str(d / "t.db"), "--out", str(d / "out")],
    "sweep": lambda d: _sweep("local", d / "s.db"),
    "sweep --executor processes": lambda d: _sweep("processes", d / "p.db"),
}


def batchlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "batchlab.cli", *args]


def handles_signals(pid: int) -> bool:
    """Whether the process catches SIGTERM: batchlab's handlers are installed (Python itself
    catches SIGINT only), so from then on the command, not the interpreter, handles a signal."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def family(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile
        return ""


def running(process: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan's exit status waits for init, which may be slow to take it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(processes: list[psutil.Process], what: str) -> None:
    deadline = time.monotonic() + HANG_S  # idle: they are gone within 0.1 s
    while (alive := [p for p in processes if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [command_line(p)[:100] for p in alive]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not alive, f"{what} left {left}"


# -- what the repetitions do (one each), shared by the tests and the stress command --------------

def pool_then_exit(_: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", POOL_THEN_EXIT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=HANG_S)  # idle: ~0.5 s
    except subprocess.TimeoutExpired:
        hung = family(proc.pid)
        proc.kill()
        assert_all_gone(hung, "a hung pool")
        raise AssertionError(f"the command had not exited {HANG_S} s after it started") from None
    assert (proc.returncode, out, err) == (0, "[3, 7, 11]\n", "")


def signal_at(kind: str, delay: float, signum: int) -> None:
    """Start command ``kind``, send ``signum`` ``delay`` s after its handlers are installed;
    it must end with 128 + signum and one line on stderr, leaving no process behind."""
    with tempfile.TemporaryDirectory() as folder:
        args = COMMANDS[kind](Path(folder))
        proc = subprocess.Popen(batchlab(*args), cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        start = time.monotonic()
        while not handles_signals(proc.pid) and proc.poll() is None and time.monotonic() - start < HANG_S:
            time.sleep(0.002)
        time.sleep(delay)
        children = family(proc.pid)
        proc.send_signal(signum)
        try:
            _, err = proc.communicate(timeout=HANG_S)  # idle: 0.1-1.5 s (JAX's import ends first)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{kind}: still running {HANG_S} s after {signum!r} at +{delay:.2f} s") from None
        finally:
            assert_all_gone(children, f"{kind} ({signum!r} at +{delay:.2f} s)")
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + signum, f"{kind}, {signum!r} at +{delay:.2f} s: exit {proc.returncode}\n{err}"
    assert len(lines) == 1 and lines[0].startswith("interrupted"), f"{kind}, {signum!r} at +{delay:.2f} s:\n{err}"
    assert lines[0].endswith(" with: batchlab " + shlex.join(args)), lines[0]  # resume with / run again with


def kill_during_training(_: int) -> None:
    """SIGKILL ``sweep --executor processes`` (the command only, as the OOM killer would) once
    its full-batch cohort is stored: one worker idle, the other training. Its workers and
    the resource tracker must end, and its stdout reach its end (nothing holds it)."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "k.db"
        proc = subprocess.Popen(batchlab(*_sweep("processes", db)), cwd=folder, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 4 * HANG_S  # idle: ~5 s
        while count_stored_runs(db) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        children = family(proc.pid)
        workers = [p for p in children if "spawn_main" in command_line(p)]
        proc.kill()
        try:
            proc.communicate(timeout=HANG_S)  # ends when no process holds the command's stdout and stderr
            assert len(workers) == 2, [command_line(p)[:100] for p in children]
        finally:
            assert_all_gone(children, "a SIGKILLed sweep")


def side_by_side(task, arguments: list) -> None:
    """``task(argument)`` for each argument, ``SIDE_BY_SIDE`` at a time; the first failure is raised."""
    with ThreadPoolExecutor(SIDE_BY_SIDE) as pool:
        futures: list[Future] = [pool.submit(task, *argument) for argument in arguments]
    for future in futures:
        future.result()


def random_moments(count: int, span: float, seed: int | None = None) -> list[tuple[str, float, int]]:
    """(command, delay, signal) for ``count`` repetitions: the delays stratified over
    [0, ``span``) s (each of ``count`` equal slices once, at a random point in it), the commands
    in turn, one in four a SIGTERM."""
    rng = random.Random(seed)
    kinds = list(COMMANDS)
    return [(kinds[i % len(kinds)], (i + rng.random()) * span / count,
             signal.SIGTERM if i % 4 == 3 else signal.SIGINT) for i in range(count)]


# -- the suite's tests ------------------------------------------------------------------------

def test_a_pool_of_workers_ends_with_the_command_20_times():
    side_by_side(pool_then_exit, [(i,) for i in range(20)])


def test_a_signal_at_a_random_moment_stops_the_command_with_130_or_143():
    moments = random_moments(6, span=2.0)
    print("signals sent:", moments)  # shown on failure, with the moment that failed in its message
    side_by_side(signal_at, moments)


def test_a_sigkilled_sweep_leaves_no_worker_and_no_open_stdout():
    kill_during_training(0)


def test_interrupts_are_held_back_where_they_cannot_be_taken():
    verdicts = []

    def judge(*_):  # would an interrupt be raised here?
        verdicts.append(interrupts._unsafe(sys._getframe()))

    judge()  # plain code
    future: Future = Future()
    future.set_result(None)
    future.add_done_callback(judge)  # run inside concurrent.futures
    gc.callbacks.append(judge)  # a garbage-collection callback: Python drops its exceptions
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(judge)

    class Finalized:
        def __del__(self):  # Python drops its exceptions too
            judge()

    Finalized()
    assert verdicts[:2] == [False, True] and verdicts[2:] == [True] * (len(verdicts) - 2) and len(verdicts) >= 4


DROPPED = """
import os, signal, sys, time, weakref
from batchlab.cli import interrupts
interrupts.install()

class Held:
    pass

def callback(_):  # Python called from C that drops its exceptions (as a Cython callback does)
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(10_000):  # the handler runs here, at a point it deems safe
        pass

held = Held()
ref = weakref.ref(held, callback)
try:
    del held  # the callback runs; an exception raised in it is reported as unraisable, then dropped
    start = time.monotonic()
    while time.monotonic() - start < 3:
        pass
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted after", round(time.monotonic() - start, 2), "s")
"""


def test_an_interrupt_dropped_by_c_code_is_raised_again_not_printed():
    """An interrupt raised in Python code that C code called and whose exceptions it drops (a
    weak reference's callback here; the sweep met one in a C extension once in some 15 suite
    runs: "Exception ignored in: 'Path'" and a traceback): not printed, raised again next."""
    done = subprocess.run([sys.executable, "-c", DROPPED], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("interrupted after 0."), done.stdout + done.stderr
    assert done.stderr == ""


def test_ray_init_leaves_the_commands_sigterm_handler(monkeypatch):
    """``ray.init`` makes SIGTERM a ``sys.exit`` (Ray 2.60; a SIGTERM then ended a sweep on a
    cluster with Ray's C++ stack dump and exit 1): the command's handler is put back."""
    class Ray:
        @staticmethod
        def init(**_):
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))

    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        executors._ray_init(Ray, None, 1)
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("argv, expected", [(["-m", "batchlab.cli", "runs"], True), (["/venv/bin/batchlab", "runs"], True),
                                            (["-X", "dev", "-m", "batchlab.cli"], True), (["-c", "..."], False),
                                            (["-m", "pytest"], False), (["script.py"], False)])
def test_the_handlers_are_installed_in_the_command_only(monkeypatch, argv, expected):
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, *argv])
    assert interrupts.is_the_command() is expected


def main() -> None:
    """The issue's full counts, reported as they go; exits 1 on the first failure."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exits", type=int, default=20, help="real `sweep --executor processes` run to their end")
    parser.add_argument("--signals", type=int, default=30, help="SIGINT/SIGTERM at random moments")
    parser.add_argument("--span", type=float, default=4.0, help="the signals' moments lie in [0, SPAN) s after "
                                                                  "the command's start (the suite's test: 2 s)")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of `sweep --executor processes`")
    args = parser.parse_args()
    start = time.monotonic()
    side_by_side(sweep_with_workers_to_its_end, [(i,) for i in range(args.exits)])
    print(f"{args.exits} sweeps with worker processes ended ({time.monotonic() - start:.0f} s)", flush=True)
    side_by_side(signal_at, random_moments(args.signals, args.span))
    print(f"{args.signals} signals at random moments: 130/143 and one line each ({time.monotonic() - start:.0f} s)",
          flush=True)
    side_by_side(kill_during_training, [(i,) for i in range(args.kills)])
    print(f"{args.kills} SIGKILLed sweeps left no worker ({time.monotonic() - start:.0f} s)")


def sweep_with_workers_to_its_end(_: int) -> None:
    """The real ``sweep --executor processes`` to its end (the stress command's exits)."""
    with tempfile.TemporaryDirectory() as folder:
        args = ["sweep", "--name", "e", "--data", "blobs", "--hidden", "8", "--batch-sizes", "50,full", "--lr", "0.05",
                "--seeds", "1", "--epochs", "3", "--executor", "processes", "--db", str(Path(folder) / "e.db")]
        proc = subprocess.run(batchlab(*args), cwd=folder, capture_output=True, text=True, timeout=4 * HANG_S)
        assert proc.returncode == 0 and "2 trained now" in proc.stdout, proc.stderr


if __name__ == "__main__":
    main()
