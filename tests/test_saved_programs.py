"""Compiled programs kept on disk: a later command loads them instead of tracing, and trains
exactly the same runs; their key changes with everything that changes the program; models
given as code are never kept; a damaged file is compiled again."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from batchlab.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig
from batchlab.engine import programs, saved_programs
from batchlab import cachedir
from batchlab.engine.jax_backend import epoch_data
from batchlab.data import load_dataset
from batchlab.models import build_model, description
from batchlab.models.base import Model
from batchlab.store import Store

TRAIN = ["train", "--data", "blobs", "--batch-size", "8,full", "--lr", "0.05", "--momentum", "0.9",
         "--epochs", "3", "--seeds", "2", "--hidden", "7"]


def _command(tmp_path, name: str) -> tuple[str, list]:
    env = {**os.environ, "BATCHLAB_CACHE_DIR": str(tmp_path / "cache"), "BATCHLAB_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "batchlab.cli", "--profile", *TRAIN, "--db", str(tmp_path / name),
                           "--out", str(tmp_path / f"out-{name}")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    with Store(tmp_path / name) as store:
        runs = sorted(store.load(), key=lambda r: r.config.run_id)
    return done.stderr, runs


def test_a_later_command_loads_the_programs_and_trains_the_same_runs(tmp_path):
    first_profile, first = _command(tmp_path, "first.db")
    saved = list((tmp_path / "cache" / "programs").glob("*/*.pkl"))
    # start, evaluation and epoch programs (B=8 and full may share one)
    assert len(saved) >= 3, first_profile
    assert "tracing" in first_profile
    second_profile, second = _command(tmp_path, "second.db")
    assert "loading programs" in second_profile and "tracing" not in second_profile, second_profile
    assert [r.config.run_id for r in first] == [r.config.run_id for r in second] and len(first) == 4
    for a, b in zip(first, second):
        for series, other in ((a.history, b.history), (a.steps, b.steps)):
            for name, values in series.items():
                if name != "wall_time":  # seconds, not results
                    np.testing.assert_array_equal(values, other[name], err_msg=name)
        assert a.history.keys() == b.history.keys() and "mb_loss" in a.steps


@pytest.fixture
def blobs_model():
    dataset = load_dataset(DataConfig("blobs"))
    cfg = RunConfig(data=DataConfig("blobs"), model=ModelConfig(hidden=(5,)), optimizer=OptimizerConfig(),
                    batch_size=8, epochs=1)
    net = build_model(cfg.model, dataset.sample_shape, dataset.num_classes)
    return cfg, net, epoch_data(dataset)


def test_the_file_follows_what_makes_the_program(blobs_model, monkeypatch):
    cfg, net, data = blobs_model
    shape = programs.EpochShape(8, 63)

    def path(model, config, runs, epoch_shape=shape):
        key = programs.ProgramKey.of(model, config, runs, data)
        return saved_programs._path(("epoch", epoch_shape, key.described()), ".pkl")

    # the environment as it is now (an earlier test in this process may have set XLA_FLAGS
    # after the folder was first named: batchlab's own default flags are set on first import)
    cachedir._environment.cache_clear()
    cachedir._environment_folder.cache_clear()
    wider = dataclasses.replace(cfg, model=ModelConfig(hidden=(6,)))
    dataset = load_dataset(cfg.data)
    other_model = build_model(wider.model, dataset.sample_shape, dataset.num_classes)
    files = [path(net, cfg, 4), path(net, cfg, 4, shape._replace(width=16)), path(net, cfg, 5),
             path(other_model, wider, 4)]
    assert path(net, cfg, 4) == files[0] and len(set(files)) == 4
    # the environment: XLA's flags choose the folder
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_fast_math=false")
    cachedir._environment.cache_clear()
    cachedir._environment_folder.cache_clear()
    try:
        assert path(net, cfg, 4).parent != files[0].parent
    finally:
        monkeypatch.undo()
        cachedir._environment.cache_clear()
        cachedir._environment_folder.cache_clear()
    assert path(net, cfg, 4) == files[0]
    monkeypatch.setenv("BATCHLAB_CACHE_DIR", "off")
    assert path(net, cfg, 4) is None


def test_a_model_given_as_code_is_not_kept(blobs_model):
    cfg, net, data = blobs_model
    assert description(net) is not None
    as_code = Model(net.init, net.apply, name="mine", task=net.task)  # same functions, but not built here
    assert description(as_code) is None
    assert programs.ProgramKey.of(as_code, cfg, 2, data).described() is None


def test_a_damaged_file_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_CACHE_DIR", str(tmp_path))
    path = saved_programs._path(("a program",), ".pkl")
    assert tmp_path in path.parents
    path.write_bytes(b"not a program")
    assert saved_programs.load(("a program",)) is None
    assert saved_programs.load(("another program",)) is None  # no file
