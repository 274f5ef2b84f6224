import os
import sys

import pytest

# The tests' compiled programs and prepared data go to the checkout's build/ folder (git-ignored),
# not into the user's ~/.cache: a second run of the suite finds them there.
os.environ.setdefault("BATCHLAB_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                         "build", "test-cache"))
# The suite runs as a user who set XLA_FLAGS: batchlab's own flags (one thread) plus XLA's older
# CPU code generation (no fusion emitters). Half of a cold suite's time is XLA compiling some 2,700
# programs, and without the fusion emitters it compiles them about 40% faster (the whole cold suite:
# 807 -> 679 CPU-s); the code runs 5-20% slower, which the suite's small runs do not notice. Numbers
# differ from batchlab's defaults in the last bits only: tests/test_xla_defaults.py trains with
# batchlab's own flags in a process of its own and compares, and checks there what only those
# flags can show. Set before any test module starts JAX, so runs in this process and in the
# tests' subprocesses (sweeps, Ray, the command line) compute alike, to the last bit.
SUITE_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_cpu_use_fusion_emitters=false"
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
