"""Figures drawn by helper processes: the same files as drawn in the command's own process, the
command never loads matplotlib, errors come back, and no helper outlives a killed command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="helpers are forked on Linux only")

HISTORY = """
import numpy as np, pandas as pd
rng = np.random.default_rng(0)
rows = [dict(run_id=f"{b}-{s}", batch_size=b, lr=0.01, seed=s, epoch=e,
             train_acc=rng.uniform(), test_acc=rng.uniform(),
             train_loss=rng.uniform(0.1, 2), test_loss=rng.uniform(0.1, 2))
        for b in (1, 32) for s in (0, 1) for e in range(6)]
history = pd.DataFrame(rows)
"""


def _python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_helpers_draw_the_same_files_and_the_command_never_loads_matplotlib(tmp_path):
    done = _python(f"""
        import sys
        from batchlab.figure_helpers import FigureDrawer
        with FigureDrawer() as drawer:
            {HISTORY.strip().replace(chr(10), chr(10) + ' ' * 12)}
            for metric in ("acc", "loss"):
                drawer.draw("learning_curves", history, metric, path=f"helped/{{metric}}")
            print([[str(f) for f in figure] for figure in drawer.files()])
            print("matplotlib" in sys.modules)
        from batchlab.plots import learning_curves, save_figure
        for metric in ("acc", "loss"):
            save_figure(learning_curves(history, metric), f"here/{{metric}}")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    files, loaded = done.stdout.splitlines()
    assert files == str([["helped/acc.png", "helped/acc.svg"], ["helped/loss.png", "helped/loss.svg"]])
    assert loaded == "False"  # drawn by the helpers, not in the command's process
    for metric in ("acc", "loss"):
        helped = (tmp_path / "helped" / f"{metric}.png").read_bytes()
        here = (tmp_path / "here" / f"{metric}.png").read_bytes()
        assert len(helped) > 10_000 and helped == here


def test_a_failed_figure_raises_in_the_command_after_the_others_are_written(tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should be")
    done = _python(f"""
        from batchlab.errors import BatchlabError
        from batchlab.figure_helpers import FigureDrawer
        {HISTORY.strip().replace(chr(10), chr(10) + ' ' * 8)}
        with FigureDrawer() as drawer:
            drawer.draw("learning_curves", history, "acc", path="taken/acc")
            drawer.draw("learning_curves", history, "loss", path="fine/loss")
            try:
                drawer.files()
            except BatchlabError as exc:
                print(exc)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cannot write the output folder taken: it is a file, not a folder"
    assert (tmp_path / "fine" / "loss.png").stat().st_size > 10_000


def test_figures_named_by_module_go_to_helpers_and_functions_are_drawn_here(tmp_path):
    (tmp_path / "my_figures.py").write_text(textwrap.dedent("""
        import os
        import matplotlib.pyplot as plt

        def marked(label):
            fig, ax = plt.subplots()
            ax.set_title(f"{label} drawn by {os.getpid()}")
            return fig
    """))
    done = _python("""
        import os, sys
        sys.path.insert(0, ".")
        from batchlab.figure_helpers import FigureDrawer
        with FigureDrawer() as drawer:
            drawer.draw("my_figures:marked", "named", path="named")
            drawer.draw(lambda: __import__("my_figures").marked("closure"), path="closure")
            print(len(drawer.files()), os.getpid())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    count, command = done.stdout.split()
    named = (tmp_path / "named.svg").read_text()
    closure = (tmp_path / "closure.svg").read_text()
    assert count == "2"
    assert f"drawn by {command}" not in named and "named drawn by" in named  # a helper drew it
    assert f"closure drawn by {command}" in closure  # a function cannot travel: drawn in the command


def test_without_helpers_figures_are_drawn_in_process(tmp_path):
    done = _python(f"""
        import sys
        from batchlab.figure_helpers import FigureDrawer
        {HISTORY.strip().replace(chr(10), chr(10) + ' ' * 8)}
        with FigureDrawer() as drawer:
            drawer.draw("learning_curves", history, "acc", path="acc")
            print(len(drawer.files()[0]), "matplotlib" in sys.modules)
    """, tmp_path, BATCHLAB_FIGURE_HELPERS="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "True"]
    assert (tmp_path / "acc.png").stat().st_size > 10_000


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent (Linux /proc); None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    found = _state_and_parent(pid)
    return found is not None and found[0] != "Z"


def _children(pid: int) -> set[int]:
    """Every living descendant of ``pid``."""
    parents = {int(entry.name): _state_and_parent(int(entry.name)) for entry in Path("/proc").iterdir()
               if entry.name.isdigit()}
    parents = {child: found[1] for child, found in parents.items() if found is not None and found[0] != "Z"}
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_helpers_go_when_the_command_is_killed(tmp_path):
    command = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from batchlab.figure_helpers import FigureDrawer
        drawer = FigureDrawer()
        time.sleep(600)
    """)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(_children(command.pid)) < 2:  # the second helper is forked once imports are done
            assert time.monotonic() < deadline, "the helpers did not start"
            time.sleep(0.1)
        helpers = _children(command.pid)
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, "a helper outlived the command"
        time.sleep(0.1)


@pytest.mark.parametrize("command", [["train"], ["study", "brownlee", "--quick"], ["study", "all", "--quick"],
                                     ["tour"], ["analyze"], ["report"], ["noise"]], ids="-".join)
def test_each_command_that_draws_starts_its_helpers_before_jax(command, tmp_path):
    """A command that imports JAX before it makes its FigureDrawer gets no helpers (silently
    slower): each command's drawer is made first, in a process that runs one thread."""
    done = _python(f"""
        import sys, threading
        import batchlab.figure_helpers as helpers

        def made(self, *args, **kwargs):
            print("jax" in sys.modules, threading.active_count())
            raise SystemExit(0)

        helpers.FigureDrawer.__init__ = made
        sys.argv = ["batchlab", *{command!r}, "--db", "store.db"]
        from batchlab.cli import main
        main()
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1"]


def test_large_jobs_and_results_never_block_each_other(tmp_path):
    """Two jobs of 4 MB each way per helper: a helper busy sending a result must still take the
    next job, or the command (sending) and the helper (replying) would wait for each other."""
    done = _python("""
        import numpy as np
        from batchlab.figure_helpers import FigureDrawer
        with FigureDrawer() as drawer:
            for k in range(4):
                drawer.call("numpy:add", np.full(500_000, float(k)), 1.0)
            print([float(r.sum()) for r in drawer.results()])
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str([500_000.0 * (k + 1) for k in range(4)])


@pytest.mark.parametrize("helpers", ["1", "0"])
def test_waiting_for_some_jobs_leaves_the_later_ones_running(tmp_path, helpers):
    """``results(tickets)`` returns once those jobs are done, while a job asked later is still
    running (it waits for a file written only after that return: were it waited for, it would
    time out instead)."""
    (tmp_path / "jobs.py").write_text(textwrap.dedent("""
        import os, time

        def quick(value):
            return value * 2

        def waits_for(path):
            for _ in range(400):
                if os.path.exists(path):
                    return "released"
                time.sleep(0.05)
            return "timed out"
    """))
    done = _python("""
        import sys
        sys.path.insert(0, ".")
        from batchlab.figure_helpers import FigureDrawer
        with FigureDrawer() as drawer:
            first = drawer.call("jobs:quick", 21)
            later = drawer.call("jobs:waits_for", "go")
            print(drawer.results([first]), drawer.ready([later]))
            open("go", "w").close()
            while not drawer.ready([later]):
                pass
            print(drawer.results())
    """, tmp_path, BATCHLAB_FIGURE_HELPERS=helpers)
    assert done.returncode == 0, done.stderr
    # In the command's own process a job runs when collected: it counts as ready (not waited for).
    assert done.stdout.split("\n")[:2] == ["[42] " + ("False" if helpers == "1" else "True"), "['released']"]
