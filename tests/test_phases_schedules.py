"""Phases (B / lr switches within a run) and lr schedules, against independent computations."""

import numpy as np
import pytest

import batchlab
from batchlab.errors import BatchlabError


def softmax_gd(x, y, classes, lrs):
    """Full-batch gradient descent on zero-initialised softmax regression, in float64 numpy."""
    w, b = np.zeros((x.shape[1], classes)), np.zeros(classes)
    onehot = np.eye(classes)[y]
    for lr in lrs:
        z = x @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(y)
        w, b = w - lr * x.T @ g, b - lr * g.sum(axis=0)
    return w, b


def loss(x, y, w, b):
    z = x @ w + b
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def iris_train():
    from batchlab.data import load_dataset, resolve_data_config

    ds = load_dataset(resolve_data_config("iris"))
    return ds.x_train.astype(np.float64), ds.y_train, ds.num_classes


def test_cosine_schedule_matches_hand_written_gradient_descent():
    x, y, k = iris_train()
    epochs, lr = 12, 0.5
    result = batchlab.train("iris", "logreg", batch_size="full", epochs=epochs, lr=lr, schedule="cosine", decay=0.1)
    lrs = [lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t / epochs))) for t in range(epochs)]
    w, b = softmax_gd(x, y, k, lrs)
    assert result.history.train_loss.iloc[-1] == pytest.approx(loss(x, y, w, b), rel=1e-5)
    constant = batchlab.train("iris", "logreg", batch_size="full", epochs=epochs, lr=lr)
    assert abs(constant.history.train_loss.iloc[-1] - result.history.train_loss.iloc[-1]) > 1e-4


def test_step_schedule_equals_an_lr_phase_and_hand_written_descent():
    x, y, k = iris_train()
    stepped = batchlab.train("iris", "logreg", batch_size="full", epochs=6, lr=0.8, schedule="step",
                             decay_epochs=[2, 4], decay=0.5)
    w, b = softmax_gd(x, y, k, [0.8, 0.8, 0.4, 0.4, 0.2, 0.2])
    assert stepped.history.train_loss.iloc[-1] == pytest.approx(loss(x, y, w, b), rel=1e-5)
    # The same lr drops as phases: a different code path (the lr carried in the run state).
    phased = batchlab.train("iris", "logreg", batch_size="full", epochs=6, lr=0.8, phases=[(2, None, 0.4), (4, None, 0.2)])
    np.testing.assert_allclose(phased.history.train_loss, stepped.history.train_loss, rtol=1e-6)


def test_a_batch_size_phase_changes_steps_and_keeps_the_records_consistent():
    result = batchlab.train("blobs", "mlp", batch_size=100, epochs=4, lr=0.05, phases=[(2, 25, None)], hidden=(8,))
    h = result.history
    assert list(h.step) == [0, 5, 10, 30, 50]  # 500/100 = 5 updates per epoch, then 500/25 = 20
    assert list(h.samples_seen) == [0, 500, 1000, 1500, 2000]
    steps = result.steps
    assert len(steps) == 50 and list(steps.step) == list(range(1, 51))
    assert result.runs[0].config.batch_size_at(3) == 25 and result.runs[0].config.batch_size_at(2) == 100


def test_phases_with_the_first_batch_size_equal_a_plain_run_until_the_switch():
    plain = batchlab.train("blobs", "mlp", batch_size=100, epochs=2, lr=0.05, hidden=(8,), seeds=2)
    phased = batchlab.train("blobs", "mlp", batch_size=100, epochs=4, lr=0.05, phases=[(2, 25, None)], hidden=(8,),
                            seeds=2)
    for seed in (0, 1):
        a = plain.history[plain.history.seed == seed].test_loss.to_numpy()
        b = phased.history[phased.history.seed == seed].test_loss.to_numpy()[:3]
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert plain.runs[0].run_id != phased.runs[0].run_id


@pytest.mark.parametrize("phases, message", [
    ([(0, 10, None)], "phase start epoch must be an integer >= 1"),
    ([(4, 10, None)], "never runs in 4 epochs"),
    ([(2, 9999, None)], "outside [1, N=500]"),
    ([(2, None, None)], "changes neither batch size nor lr"),
    ([(2, 10, None), (1, 20, None)], "increasing order"),
    ([(2, None, -1.0)], "phase learning rate must be > 0"),
])
def test_bad_phases_are_refused_before_training(phases, message):
    with pytest.raises(BatchlabError, match=message.replace("[", r"\[")):
        batchlab.train("blobs", batch_size=10, epochs=4, phases=phases)


def test_step_schedule_needs_its_epochs():
    with pytest.raises(BatchlabError, match="decay_epochs"):
        batchlab.train("blobs", epochs=3, schedule="step")
    with pytest.raises(BatchlabError, match="unknown lr schedule"):
        batchlab.train("blobs", epochs=3, schedule="exponential")
