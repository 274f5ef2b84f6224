import pytest

from batchlab import budget
from batchlab.errors import BatchlabError


def test_brownlee_worked_example():
    p = budget.plan(200, 5, 1000)
    assert p.steps_per_epoch == 40
    assert p.total_steps == 40_000
    assert p.samples_seen == 200_000
    assert p.regime == "mini-batch gradient descent"
    assert "40 batches (updates) per epoch" in p.describe() and "40,000 updates" in p.describe()


def test_partial_batch_kept_or_dropped():
    assert budget.steps_per_epoch(500, 450, drop_last=False) == 2
    assert budget.steps_per_epoch(500, 450, drop_last=True) == 1
    kept, dropped = budget.plan(500, 450, 3), budget.plan(500, 450, 3, drop_last=True)
    assert kept.last_batch_size == 50 and kept.samples_seen == 1500
    assert dropped.samples_seen == 1350


@pytest.mark.parametrize("b, name", [(1, "stochastic"), (500, "batch gradient"), (32, "mini-batch")])
def test_regime_names(b, name):
    assert name in budget.regime(500, b)


@pytest.mark.parametrize("b", [0, -3, 501, 2.5, True, "8"])
def test_bad_batch_sizes_are_errors_not_clamped(b):
    with pytest.raises(BatchlabError, match="batch size"):
        budget.plan(500, b, 1)


def test_epochs_must_be_positive():
    with pytest.raises(BatchlabError, match="epochs"):
        budget.plan(500, 5, 0)
