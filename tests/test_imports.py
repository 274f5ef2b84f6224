"""Reading a store needs neither JAX nor the engine (they cost about a second to import)."""

import subprocess
import sys


def test_store_readers_do_not_import_jax(tmp_path):
    code = ("import sys, batchlab, batchlab.store, batchlab.studies.outputs, batchlab.analysis.scaling, "
            "batchlab.report, batchlab.cli; print(sorted(m for m in sys.modules if m in ('jax', 'optax') or "
            "m.startswith(('batchlab.engine.step', 'batchlab.engine.jax_backend', 'batchlab.api'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_training_api_loads_on_first_use():
    code = "import batchlab, sys; batchlab.train; print('jax' in sys.modules, batchlab.plan(200, 5, 1000).total_steps)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "40000"]
