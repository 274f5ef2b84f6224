"""Brownlee's experiment (science.md section 2), measured over seeds.

Full size (200 epochs, 5 seeds) takes a few seconds here, so the default suite runs it whole.
"""

import numpy as np
import pandas as pd
import pytest

from batchlab.studies import brownlee


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("brownlee")
    return brownlee.run(out, seeds=5, epochs=200), out


def row(table: pd.DataFrame, b: int, lr: float) -> pd.Series:
    return table[(table.batch_size == b) & np.isclose(table.lr, lr)].iloc[0]


def test_findings_over_five_seeds(study):
    output, _ = study
    table = output.table
    b32, b500, b1_fast, b1_slow = row(table, 32, 0.01), row(table, 500, 0.01), row(table, 1, 0.01), row(table, 1, 0.001)
    assert all(table.seeds == 5)
    assert 0.78 <= b32.test_acc <= 0.86
    assert b1_fast.test_acc < b32.test_acc
    # Batch GD reaches 80% test accuracy later than B=32 (or never: then it is also later).
    assert b32.reached_80pct == 1.0
    assert b500.reached_80pct < 1.0 or b500.epoch_to_80pct_test > b32.epoch_to_80pct_test
    # Late-epoch jitter of test accuracy shrinks as B grows.
    assert b1_slow.jitter_last50_test > b32.jitter_last50_test > b500.jitter_last50_test


def test_outputs_written(study):
    output, out = study
    for name in ("learning_curves_acc.png", "learning_curves_loss.svg", "summary.md", "summary.csv"):
        assert (out / name).stat().st_size > 100
    assert "batch gradient descent (B=500) makes 25 updates" in output.reasoning
    assert "makes 12,500" in output.reasoning
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and len(output.result.runs) == 20
