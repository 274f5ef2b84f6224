"""log_to= and ``batchlab export --format tensorboard|mlflow``: each tool's files, read back
with that tool's own reader, hold the store's numbers at the store's update numbers."""

import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
import wandb_offline  # noqa: E402
from stores import made_up_runs  # noqa: E402

from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.monitor import TorchMonitor  # noqa: E402
from batchlab.sinks.mlflow_sink import MLflowSink  # noqa: E402
from batchlab.sinks.tensorboard_sink import TensorBoardSink  # noqa: E402
from batchlab.sinks.wandb_sink import WandbSink  # noqa: E402
from batchlab.store import Store  # noqa: E402
from batchlab.version import __version__  # noqa: E402

UPDATES, FLUSH = 13, 5  # three flushes: each row must reach the sinks once
VALUES = ("grad_norm", "update_norm", "dist_init", "mb_loss")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A monitored loop sending to TensorBoard, an MLflow file store and offline W&B."""
    tmp = tmp_path_factory.mktemp("sinks")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    sinks = [TensorBoardSink(tmp / "tb"), MLflowSink(f"file:{tmp / 'mlruns'}"), WandbSink(tmp / "wb")]
    mon = TorchMonitor(model, db=tmp / "b.db", name="logged", flush_every=FLUSH, log_to=sinks, optimizer=opt,
                       warmup=3)
    for t in range(UPDATES):
        rows = slice(4 * t, 4 * t + 4 + t % 3)  # batches of 4 to 6 rows
        loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
        loss.backward()
        mon.update(batch_size=len(x[rows]), loss=loss)
        opt.step()
        opt.zero_grad()
    mon.close()
    with Store(tmp / "b.db") as store:
        (run,) = store.load()
    yield tmp, run, mon.run_id
    os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def test_the_store_holds_what_is_compared(logged):
    _, run, _ = logged
    assert list(run.steps["step"]) == list(range(1, UPDATES + 1))
    assert all(np.isfinite(run.steps[name]).all() for name in VALUES)


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: ([e.step for e in acc.Scalars(tag)], [e.value for e in acc.Scalars(tag)])
            for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_the_stored_series(logged):
    tmp, run, run_id = logged
    scalars = tensorboard_scalars(tmp / "tb" / f"logged-{run_id[:8]}")
    assert set(scalars) == set(VALUES)
    for name in VALUES:
        steps, values = scalars[name]
        assert steps == list(run.steps["step"])
        # TensorBoard keeps float32: the stored float64 rounded, exactly
        assert values == [float(np.float32(v)) for v in run.steps[name]]


def test_mlflow_file_store_holds_the_stored_series(logged):
    from mlflow.tracking import MlflowClient

    tmp, run, run_id = logged
    client = MlflowClient(tracking_uri=f"file:{tmp / 'mlruns'}")
    (found,) = client.search_runs([client.get_experiment_by_name("batchlab").experiment_id])
    assert found.data.tags["batchlab.run_id"] == run_id and found.info.status == "FINISHED"
    assert found.data.params["lr"] == "0.1" and found.data.params["warmup"] == "3"
    for name in VALUES:
        history = sorted(client.get_metric_history(found.info.run_id, name), key=lambda m: m.step)
        assert [m.step for m in history] == list(run.steps["step"])
        assert [m.value for m in history] == list(run.steps[name])  # float64: equal


def test_wandb_offline_run_holds_the_stored_series(logged):
    tmp, run, _ = logged
    history = wandb_offline.history(tmp / "wb")
    assert sorted(history) == list(run.steps["step"])
    for name in VALUES:
        assert [history[s][name] for s in sorted(history)] == list(run.steps[name])
    assert wandb_offline.config(tmp / "wb")["warmup"] == 3


def test_export_writes_stored_runs_to_tensorboard_and_mlflow(logged, tmp_path):
    from typer.testing import CliRunner

    from batchlab.cli import app

    _, monitored, run_id = logged
    trained = made_up_runs(1)[0]
    with Store(tmp_path / "two.db") as store:
        store.write([trained, monitored], __version__)
    runner = CliRunner()
    for _ in range(2):  # a second export replaces the first: no doubled points
        done = runner.invoke(app, ["export", "--format", "tensorboard", "--out", str(tmp_path / "tb"),
                                   "--db", str(tmp_path / "two.db")])
        assert done.exit_code == 0, done.output
    scalars = tensorboard_scalars(tmp_path / "tb" / f"logged-{run_id[:8]}")
    assert scalars["grad_norm"] == (list(monitored.steps["step"]),
                                    [float(np.float32(v)) for v in monitored.steps["grad_norm"]])
    scalars = tensorboard_scalars(tmp_path / "tb" / f"B25-seed0-{trained.run_id[:8]}")
    assert scalars["mb_loss"][0] == list(range(1, 21))  # a series without a step column: 1, 2, ...
    assert scalars["epoch/test_acc"] == ([0, 10, 20], [float(np.float32(v)) for v in trained.history["test_acc"]])

    os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)  # export says it itself
    try:
        for _ in range(2):
            done = runner.invoke(app, ["export", "--format", "mlflow", "--out", str(tmp_path / "ml"),
                                       "--db", str(tmp_path / "two.db")])
            assert done.exit_code == 0, done.output
        assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    finally:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "ml").resolve().as_uri())
    found = client.search_runs([client.get_experiment_by_name("batchlab").experiment_id])
    assert sorted(r.data.tags["batchlab.kind"] for r in found) == ["monitored", "trained"]
    by_kind = {r.data.tags["batchlab.kind"]: r.info.run_id for r in found}
    history = sorted(client.get_metric_history(by_kind["monitored"], "dist_init"), key=lambda m: m.step)
    assert [m.value for m in history] == list(monitored.steps["dist_init"])
    history = sorted(client.get_metric_history(by_kind["trained"], "epoch/train_loss"), key=lambda m: m.step)
    assert [m.value for m in history] == list(trained.history["train_loss"])


def test_bad_log_to_is_one_clear_error(tmp_path):
    model = torch.nn.Linear(2, 1)
    with pytest.raises(BatchlabError, match="unknown sink 'tensorbored'"):
        TorchMonitor(model, db=tmp_path / "a.db", log_to="tensorbored")
    (tmp_path / "file").write_text("")
    with pytest.raises(BatchlabError, match="cannot write TensorBoard files"):
        TorchMonitor(model, db=tmp_path / "b.db", log_to=f"tensorboard:{tmp_path / 'file'}")
    with pytest.raises(BatchlabError, match="not a sink"):
        TorchMonitor(model, db=tmp_path / "c.db", log_to=[object()])
