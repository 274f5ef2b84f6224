"""Regression (float targets, mean squared error) through the engine, the instruments and the
CLI, against hand-written numpy."""

import subprocess
import sys

import numpy as np
import pytest

import batchlab
from batchlab.api import prepare, run_configs
from batchlab.instruments.gradients import gram_matrix, statistics_from_gram


def linear_problem(n=40, features=3, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.normal(size=(features, outputs))
    y = x @ w + 0.3 * rng.normal(size=(n, outputs))
    return x, (y[:, 0] if outputs == 1 else y).astype(np.float32)


def _run(x, y, **settings):
    grid = dict(hidden=(), activation="relu", init="he_uniform", dropout=0.0, standardize=False,
                test_fraction=0.25, label="label", task="regression", epochs=1, lr=0.1, seeds=1)
    configs, dataset, net = prepare((x, y), "logreg", **{**grid, **settings})
    return run_configs(configs, dataset, net, checkpoints=(0, 1)).runs[0], dataset


def _mse_and_gradient(w, b, x, y):
    """Mean over rows (and outputs) of the squared error of x @ w + b, and its gradient."""
    y = y.reshape(len(y), -1)
    residual = x @ w + b - y
    k = y.shape[1]
    loss = np.mean(residual ** 2)
    return loss, 2 * x.T @ residual / (len(x) * k), 2 * residual.sum(0) / (len(x) * k)


@pytest.mark.parametrize("outputs", [1, 2])
def test_full_batch_step_follows_the_hand_written_mse_gradient(outputs):
    x, y = linear_problem(outputs=outputs)
    run, dataset = _run(x, y, batch_size="full", lr=0.1)
    w0, b0 = (np.asarray(run.checkpoints[0][k], np.float64) for k in ("w", "b"))
    xt, yt = dataset.x_train.astype(np.float64), dataset.y_train.astype(np.float64)
    loss, gw, gb = _mse_and_gradient(w0, b0, xt, yt)
    assert run.steps["mb_loss"][0] == pytest.approx(loss, rel=1e-5)
    assert run.history["train_loss"][0] == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(run.checkpoints[1]["w"], w0 - 0.1 * gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.checkpoints[1]["b"], b0 - 0.1 * gb, rtol=1e-5, atol=1e-6)
    # R^2 = 1 - MSE / Var(y), pooled over the outputs, on each split.
    for split, xs, ys in (("train", xt, yt), ("test", dataset.x_test, dataset.y_test)):
        ys = np.asarray(ys, np.float64).reshape(len(ys), -1)
        mse = np.mean((np.asarray(xs, np.float64) @ w0 + b0 - ys) ** 2)
        expected = 1 - mse / np.mean((ys - ys.mean(0)) ** 2)
        assert run.history[f"{split}_r2"][0] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert "train_acc" not in run.history and "mb_acc" not in run.steps


def test_per_sample_gradient_statistics_of_the_mse():
    x, y = linear_problem(n=30)
    run, dataset = _run(x, y, batch_size=4)
    _, _, net = prepare((x, y), "logreg", hidden=(), activation="relu", init="he_uniform", dropout=0.0,
                        standardize=False, test_fraction=0.25, label="label", task="regression",
                        batch_size=4, epochs=1, lr=0.1)
    params = run.checkpoints[1]
    xt, yt = dataset.x_train.astype(np.float64), dataset.y_train.astype(np.float64)
    w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    residual = (xt @ w + b)[:, 0] - yt
    per_sample = 2 * residual[:, None] * np.hstack([xt, np.ones((len(xt), 1))])  # d(r^2)/d(w, b)
    mean = per_sample.mean(0)
    stats = statistics_from_gram(gram_matrix(net, params, {}, dataset.x_train, dataset.y_train))
    assert stats["grad_sq"] == pytest.approx(mean @ mean, rel=1e-5)
    assert stats["trace"] == pytest.approx(np.mean(np.sum((per_sample - mean) ** 2, axis=1)), rel=1e-5)


def test_regression_learns_and_reports_r2():
    result = batchlab.train("regression", "mlp", batch_size=16, epochs=15, lr=0.01, momentum=0.9, seeds=1)
    history = result.history
    assert history.test_r2.iloc[-1] > 0.9 > history.test_r2.iloc[0]
    assert {"train_r2", "test_r2"} <= set(result.summary.columns)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "batchlab.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_csv_regression_through_the_cli_and_a_nan_target(tmp_path):
    x, y = linear_problem(n=60)
    rows = ["a,b,c,price"] + [f"{a},{b},{c},{t}" for (a, b, c), t in zip(x, y)]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    done = _cli("train", "--data", "table.csv", "--label", "price", "--task", "regression", "--model", "mlp",
                "--batch-size", "8", "--epochs", "3", "--db", "runs.db", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test R2" in done.stdout
    rows[5] = rows[5].rsplit(",", 1)[0] + ",nan"
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    bad = _cli("train", "--data", "bad.csv", "--label", "price", "--task", "regression", "--db", "runs.db",
               cwd=tmp_path)
    assert bad.returncode == 2 and "NaN" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_noise_runs_on_a_regression(tmp_path):
    done = _cli("noise", "--data", "regression", "--at-epochs", "0,1", "--batch-sizes", "1:64", "--trials", "20",
                "--no-sharpness", "--out", "out", "--db", "runs.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "noise_table.csv").exists()


def test_task_is_part_of_the_run_id_and_checked():
    x, y = linear_problem(n=40)
    labels = (y > 0).astype(np.int64)
    regression = prepare((x, labels.astype(np.float32)), "mlp", hidden=(4,), activation="relu",
                         init="he_uniform", dropout=0.0, standardize=False, test_fraction=0.25, label="label",
                         task="regression", batch_size=4, epochs=1, lr=0.1)[0][0]
    classification = prepare((x, labels), "mlp", hidden=(4,), activation="relu", init="he_uniform", dropout=0.0,
                             standardize=False, test_fraction=0.25, label="label", batch_size=4, epochs=1,
                             lr=0.1)[0][0]
    assert regression.run_id != classification.run_id
    with pytest.raises(batchlab.BatchlabError, match="regression problem"):
        prepare("diabetes", "mlp", hidden=(4,), activation="relu", init="he_uniform", dropout=0.0,
                standardize=None, test_fraction=0.25, label="label", task="classification", batch_size=4,
                epochs=1, lr=0.1)


def test_the_report_shows_a_regression_group_with_r2(tmp_path):
    import warnings

    from batchlab.report.build import build_report

    batchlab.train("regression", "mlp", batch_size="16,64", epochs=3, lr=0.01, seeds=2, db=tmp_path / "runs.db")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a section that cannot be rebuilt warns
        page = build_report(tmp_path / "runs.db", tmp_path / "report").read_text()
    assert '"test_r2"' in page and "R² vs epoch" in page
    assert "could not rebuild" not in page
