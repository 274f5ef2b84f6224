"""The suite compiles with more XLA flags than batchlab's own (tests/conftest.py): here batchlab
trains with its own flags alone, in a process of its own (tests/default_flags.py), and checks
what only those flags can show, and that the suite's numbers are theirs to float rounding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from batchlab.api import prepare
from batchlab.engine.jax_backend import train_cohort
from batchlab.runtime import XLA_FLAGS
from helpers import batchlab_flags_env

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def defaults():
    done = subprocess.run([sys.executable, str(HERE / "default_flags.py")], capture_output=True, text=True,
                          env=batchlab_flags_env(),
                          timeout=300, cwd=HERE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_suite_adds_to_batchlabs_flags_and_the_process_used_batchlabs_alone(defaults):
    from conftest import SUITE_XLA_FLAGS

    assert SUITE_XLA_FLAGS.startswith(XLA_FLAGS + " ") and os.environ["XLA_FLAGS"] == SUITE_XLA_FLAGS
    assert defaults["flags"] == defaults["batchlab_flags"] == XLA_FLAGS


def test_with_batchlabs_flags_an_epoch_that_evaluates_gives_the_separate_evaluations_bits(defaults):
    """The epoch program compiles with XLA's defaults, the evaluation program with
    ``programs.EVAL_OPTIONS``: only under batchlab's own flags do they differ in how they compile."""
    assert defaults["evaluates_same_bits"] is True


def test_the_suites_flags_give_the_same_runs_to_float_rounding(defaults):
    from default_flags import SETTINGS

    runs = train_cohort(*prepare("digits", "mlp", **SETTINGS))
    assert len(runs) == len(defaults["runs"]) == 2
    for run, other in zip(runs, defaults["runs"]):
        for key in ("train_loss", "test_acc"):
            np.testing.assert_allclose(run.history[key], other["history"][key], rtol=1e-4, err_msg=key)
        np.testing.assert_allclose(run.steps["noise_scale"], other["noise_scale"], rtol=1e-4)
        np.testing.assert_allclose([np.linalg.norm(leaf) for leaf in jax.tree.leaves(run.params)], other["params"],
                                   rtol=1e-4)
