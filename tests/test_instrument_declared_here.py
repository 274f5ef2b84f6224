"""An instrument declared in this file alone, as a user would declare one in theirs, is measured
by both backends, appears in ``result.steps`` and in the store; an instrument's schedule
(``name@k``) is honoured, its state included."""

import numpy as np
import pytest

import batchlab
from batchlab.instruments.base import StepInstrument
from batchlab.store import Store


def init(params, ops):
    return ops.zeros(())


def update(updates_seen, step):
    """The effective learning rate ||theta_{t+1} - theta_t|| / ||g|| and how many updates it saw."""
    ops = step.ops
    squares = ops.sq_norms([step.grad, ops.sub(step.new_params, step.params)])
    seen = updates_seen + 1
    return seen, {"effective_lr": ops.sqrt(squares[1]) / ops.sqrt(squares[0]), "updates_seen": seen}


EFFECTIVE_LR = StepInstrument("effective_lr", update.__doc__, update, init, outputs=("effective_lr", "updates_seen"))


def torch_mlp(input_shape, num_classes):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 8), torch.nn.ReLU(), torch.nn.Linear(8, num_classes))


@pytest.mark.parametrize("model", ["mlp", torch_mlp], ids=["jax", "torch"])
def test_an_instrument_declared_here_is_recorded_and_stored(model, tmp_path):
    pytest.importorskip("torch") if model is torch_mlp else None
    db = tmp_path / "runs.db"
    result = batchlab.train("blobs", model, batch_size=100, epochs=3, lr=0.05, hidden=(8,), seeds=2,
                            instruments=[EFFECTIVE_LR, "grad_norm"], db=db)
    for run in result.runs:
        steps = run.steps
        updates = len(steps["step"])
        assert updates == 15
        np.testing.assert_allclose(steps["effective_lr"], 0.05, rtol=1e-4)  # plain SGD: the update is lr g
        np.testing.assert_array_equal(steps["updates_seen"], np.arange(1, updates + 1))
    with Store(db) as store:
        (stored, *_) = store.load([result.runs[0].run_id])
    np.testing.assert_array_equal(stored.steps["effective_lr"], result.runs[0].steps["effective_lr"])
    assert "effective_lr" in result.steps.columns and "updates_seen" in result.steps.columns


@pytest.mark.parametrize("model", ["mlp", torch_mlp], ids=["jax", "torch"])
def test_a_schedule_measures_every_kth_update_only(model):
    pytest.importorskip("torch") if model is torch_mlp else None
    common = dict(batch_size=100, epochs=3, lr=0.05, momentum=0.9, hidden=(8,))
    every = batchlab.train("blobs", model, instruments="grad_norm", **common).runs[0].steps
    third = batchlab.train("blobs", model, instruments=["grad_norm@3", "effective_lr@2"], **common).runs[0].steps
    on = every["step"] % 3 == 0
    assert on.sum() == 5 and np.isnan(third["grad_norm"][~on]).all()
    np.testing.assert_allclose(third["grad_norm"][on], every["grad_norm"][on], rtol=1e-6)
    even = every["step"] % 2 == 0
    # The state moves only when measured: the k-th measurement has seen k updates.
    np.testing.assert_array_equal(third["updates_seen"][even], np.arange(1, even.sum() + 1))
    assert np.isnan(third["updates_seen"][~even]).all()
    np.testing.assert_array_equal(third["mb_loss"], every["mb_loss"])  # measuring never changes training


def test_measuring_does_not_change_the_torch_backends_training():
    """Instruments read the step; they never change the update (bit for bit). (Those that need
    the two half-batch gradients, noise_scale, sum the batch's gradient from two halves: the same
    update up to rounding, tests/test_gradient_paths.py.)"""
    pytest.importorskip("torch")
    common = dict(batch_size=32, epochs=2, lr=0.05, momentum=0.9, seeds=2)
    bare = batchlab.train("blobs", torch_mlp, **common).runs
    measured = batchlab.train("blobs", torch_mlp, instruments="standard,weight_norm", **common).runs
    for a, b in zip(bare, measured):
        np.testing.assert_array_equal(a.steps["mb_loss"], b.steps["mb_loss"])
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])
