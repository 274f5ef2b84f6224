import os
import sys

import pytest

# The tests' compiled programs and prepared data go to the checkout's build/ folder (git-ignored),
# not into the user's ~/.cache: a second run of the suite finds them there.
os.environ.setdefault("BATCHLAB_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                         "build", "test-cache"))
# batchlab's XLA settings (one thread) before any test module starts JAX, so runs in this process
# and in worker processes (sweeps, Ray) compute alike, to the last bit.
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
