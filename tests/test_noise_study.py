"""The ``noise`` command end to end, at a reduced size (the CLI default is 1000 trials, B up to 1024)."""

import numpy as np
import pandas as pd
import pytest

from batchlab.cli.noise import measure_noise


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise")
    return measure_noise(out, data="digits", at_epochs=(1, 5), batch_sizes="1:256", trials=200,
                         sampling="both", pool=600), out


def test_summed_gradient_grows_with_batch_size_as_theory_says(study):
    output, _ = study
    points = output.points
    assert set(points.sampling) == {"with", "without"} and set(points.reduction) == {"sum", "mean"}
    assert len(points) == 2 * 2 * 2 * 9  # checkpoints x sampling x reduction x B in 1..256
    for _, group in points.groupby(["epoch", "sampling", "reduction"]):
        relative = np.abs(group.mean_sq_norm - group.theory_sq_norm) / group.theory_sq_norm
        assert relative.max() < 0.2  # 200 trials: the Monte-Carlo mean is within 20% of E||g_B||^2
    sums = points[(points.reduction == "sum") & (points.sampling == "without")]
    for _, group in sums.groupby("epoch"):
        assert np.all(np.diff(group.sort_values("batch_size").mean_norm) > 0)
    table = output.table
    assert list(table.epoch) == [1, 5]
    assert np.all(table.noise_scale > 0) and np.all(table.lambda_max > 0)
    assert np.all((table.sq_norm_exponent > 0.9) & (table.sq_norm_exponent < 2.1))


def test_files_written(study):
    _, out = study
    for name in ("noise_table.csv", "noise_points.csv", "gradient_norm_vs_batch.png", "gradient_norm_vs_batch.svg"):
        assert (out / name).stat().st_size > 100
    assert len(pd.read_csv(out / "noise_points.csv")) == 72


def test_noise_cli_and_its_errors(cli):
    code, out, err = cli("noise", "--data", "blobs", "--at-epochs", "0,2", "--batch-sizes", "1,8,full",
                         "--trials", 50, "--no-sharpness", "--hidden", 8)
    assert code == 0, err
    assert "B_simple" in out and "gradient_norm_vs_batch.png" in out
    code, _, err = cli("noise", "--data", "blobs", "--batch-sizes", "1,4096", "--at-epochs", "1")
    assert code == 2 and "exceed the pool of 500" in err
    code, _, err = cli("noise", "--data", "blobs", "--at-epochs", "x")
    assert code == 2 and "checkpoint epochs" in err
    code, _, err = cli("noise", "--data", "blobs", "--at-epochs", "log:3")
    assert code == 2 and "needs the number of epochs" in err
    code, _, err = cli("noise", "--data", "blobs", "--at-epochs", "5", "--epochs", 3)
    assert code == 2 and "after the run's last epoch 3" in err


def test_checkpoint_schedules():
    from batchlab.instruments.base import parse_epoch_schedule

    assert parse_epoch_schedule("30,2,2", None) == (2, 30)
    assert parse_epoch_schedule("every:10", 30) == (10, 20, 30)
    assert parse_epoch_schedule("log:4", 1000) == (1, 10, 100, 1000)


def test_measurements_are_stored(tmp_path):
    from batchlab.store import Store

    db = tmp_path / "runs.db"
    measure_noise(tmp_path / "out", data="blobs", at_epochs=(0, 1), batch_sizes="1,4", trials=20,
                  hidden=(4,), sharpness=False, db=db)
    with Store(db) as store:
        (run,) = store.load()
        stats = store.measurements("gradient_statistics")
        norms = store.measurements("batch_gradient_norms")
    assert list(stats.epoch) == [0, 1] and set(stats.run_id) == {run.run_id}
    assert len(norms) == 2 * 2 * 2 and {"mean_norm", "theory_sq_norm"} <= set(norms.columns)


def test_a_model_with_batch_statistics_is_refused_before_training(tmp_path):
    import jax.numpy as jnp

    import batchlab
    from batchlab.store import Store

    def init(key):
        return {"w": jnp.zeros((64, 10))}, {"mean": jnp.zeros(64)}  # a running mean: non-trained state

    def apply(params, state, x, *, train, key=None):
        x = x.reshape(x.shape[0], -1)
        return (x - state["mean"]) @ params["w"], state

    db = tmp_path / "runs.db"
    with pytest.raises(batchlab.BatchlabError, match="checkpoints keep parameters only"):
        measure_noise(tmp_path / "out", data="digits", model=batchlab.Model(init, apply, "stateful"),
                      at_epochs=(1,), batch_sizes="1:8", trials=4, db=db)
    with Store(db) as store:
        assert store.run_ids() == set()
