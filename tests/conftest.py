import os
import sys

import pytest

# The tests' compiled programs and prepared data go to the checkout's build/ folder (git-ignored),
# not into the user's ~/.cache: a second run of the suite finds them there.
os.environ.setdefault("BATCHLAB_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                         "build", "test-cache"))
# The suite runs as a user who set XLA_FLAGS: batchlab's own flags (one thread), XLA's older CPU
# code generation (no fusion emitters) and no LLVM optimization, a debug build as `cargo test`
# makes one. Most of a cold suite's time is XLA compiling some 2,700 programs; so compiled, the
# whole cold suite took 303 s of wall and 569 CPU-s on this 2-core machine, against 391 s and 742
# CPU-s in the same hour with the fusion emitters off alone, and 434 s and 807 CPU-s with
# batchlab's flags alone (an hour before: this machine's speed varies by up to a third). The code
# runs slower, which the suite's small
# runs do not notice, and its numbers differ from batchlab's defaults in the last bits:
# tests/test_xla_defaults.py trains with batchlab's own flags in a process of its own, compares,
# and checks there what only those flags can show. Set before any test module starts JAX, so
# runs in this process and in the tests' subprocesses (sweeps, Ray, the command line) compute
# alike, to the last bit.
SUITE_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false --xla_cpu_use_fusion_emitters=false "
                   "--xla_backend_optimization_level=0")
os.environ.setdefault("XLA_FLAGS", SUITE_XLA_FLAGS)
import batchlab  # noqa: E402,F401


def run_cli(args, capsys):
    """Run ``batchlab ARGS`` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from batchlab.cli import main

    old = sys.argv
    sys.argv = ["batchlab", *map(str, args)]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return lambda *args: run_cli(args, capsys)
