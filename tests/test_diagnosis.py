"""The learning-curve diagnosis: synthetic curves of each kind, then real runs that are clearly of
each kind (a tiny lr for a few epochs; Brownlee's B = 1 at lr 0.01; a small set trained long),
and where the labels show (``result.summary``, ``batchlab runs``)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import batchlab
from batchlab.diagnosis import AFTER, JUMPY_ACC, RISE, diagnose

EPOCHS = np.arange(61)


def curves(train, test, acc=None):
    out = {"train_loss": np.asarray(train, float), "test_loss": np.asarray(test, float)}
    if acc is not None:
        out["test_acc"] = np.asarray(acc, float)
    return out


def test_synthetic_curves_of_each_kind():
    plateau = 0.2 + 2.0 * np.exp(-EPOCHS / 5)
    assert diagnose(curves(plateau, plateau + 0.05)).labels == ("good fit",)
    # still learning: both fall steadily to the end
    falling = 2.3 * np.exp(-EPOCHS / 40)
    assert diagnose(curves(falling, falling + 0.1)).labels == ("under-fit",)
    # barely learned: flat near its start
    assert diagnose(curves(2.3 - 0.001 * EPOCHS, 2.3 - 0.001 * EPOCHS)).labels == ("under-fit",)
    # over-fit from epoch 20: the test loss's minimum, then up by 50% while training falls
    test = 0.5 + 0.002 * (EPOCHS - 20) ** 2
    d = diagnose(curves(plateau * np.exp(-EPOCHS / 30), test))
    assert d.labels == ("over-fit",) and d.overfit_epoch == 20 and str(d) == "over-fit@20"
    # the same rise, but the training loss rising too: not over-fitting
    assert "over-fit" not in diagnose(curves(plateau + 0.001 * EPOCHS, test)).labels
    # unstable: test accuracy jumping by 5 points from epoch to epoch (and over-fit besides)
    acc = 0.9 + 0.05 * (EPOCHS % 2)
    d = diagnose(curves(plateau * np.exp(-EPOCHS / 30), test, acc))
    assert d.labels == ("over-fit", "unstable") and d.numbers["test_acc_jumps"] > JUMPY_ACC
    # a regression: test loss jumping by 30% of its level
    jumpy = plateau + 0.3 * 0.2 * (EPOCHS % 2)
    assert diagnose(curves(plateau, jumpy)).labels == ("unstable",)
    assert diagnose(curves(plateau, plateau), "diverged").labels == ("diverged",)
    assert diagnose(curves(np.r_[1.0, 0.5, 3.0], np.r_[1.0, 0.5, 3.0])).labels == ("diverged",)


def test_over_fit_needs_its_rise_and_its_distance_from_the_end():
    train = np.linspace(1.0, 0.1, 61)
    below = 0.5 + (RISE * 0.9) * 0.5 * (EPOCHS >= 40)  # ends (RISE x 0.9) above the minimum: not over-fit
    assert "over-fit" not in diagnose(curves(train, below)).labels
    late = np.r_[np.linspace(1.0, 0.5, 61 - AFTER + 1), 0.8 * np.ones(AFTER - 1)]  # minimum AFTER - 1 from the end
    assert "over-fit" not in diagnose(curves(train, late)).labels


@pytest.fixture(scope="module")
def real_runs():
    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target
    tiny = batchlab.train("digits", "mlp", batch_size=32, epochs=10, lr=1e-4)
    brownlee = batchlab.train("blobs", "mlp", batch_size=1, epochs=200, lr=0.01, momentum=0.9, seeds=2)
    small = batchlab.train((x[:100], y[:100], x[1000:1400], y[1000:1400]), "mlp", hidden=(256,), batch_size=10,
                           epochs=300, lr=0.1, momentum=0.9)
    return tiny, brownlee, small


def test_real_runs_that_are_clearly_of_each_kind(real_runs):
    tiny, brownlee, small = real_runs
    assert tiny.summary.diagnosis.tolist() == ["under-fit"]
    assert all("unstable" in text for text in brownlee.summary.diagnosis)
    (text,) = small.summary.diagnosis
    onset = int(text.split("@")[1])
    test_loss = small.runs[0].history["test_loss"]
    assert text == f"over-fit@{onset}" and onset == int(np.argmin(test_loss)) and onset < 300 - AFTER
    assert test_loss[-1] > (1 + RISE) * test_loss[onset]


def test_the_runs_table_shows_the_fit(cli, tmp_path):
    code, out, err = cli("train", "--data", "digits", "--batch-size", "32", "--epochs", "10", "--lr", "0.0001",
                         "--db", "d.db", "--out", "out")
    assert code == 0, err
    code, out, err = cli("runs", "--db", "d.db")
    assert code == 0 and " fit " in out and "under" in out and "fit: what the learning curves say" in out
