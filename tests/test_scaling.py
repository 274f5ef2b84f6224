import numpy as np
import pandas as pd
import pytest

from batchlab.analysis.scaling import fit_critical_batch, per_setting, to_target
from batchlab.analysis.selection import best_per_batch
from batchlab.targets import parse_target
from batchlab.errors import BatchlabError


@pytest.mark.parametrize("s_min, b_crit", [(400.0, 64.0), (1500.0, 700.0)])
def test_fit_recovers_synthetic_critical_batch(s_min, b_crit):
    rng = np.random.default_rng(0)
    b = np.repeat(2.0 ** np.arange(0, 13), 3)  # B = 1 .. 4096, three seeds each
    steps = s_min * (1 + b_crit / b) * np.exp(rng.normal(0, 0.05, size=b.size))  # 5% noise
    fit = fit_critical_batch(b, steps)
    assert fit.s_min == pytest.approx(s_min, rel=0.1)
    assert fit.b_crit == pytest.approx(b_crit, rel=0.1)
    assert fit.e_min == pytest.approx(s_min * b_crit, rel=0.2)
    assert 0 < fit.b_crit_se < fit.b_crit
    assert fit.regime(b_crit / 100) == "perfect scaling" and fit.regime(b_crit * 100) == "no gain"
    assert fit.regime(b_crit) == "diminishing returns"


def test_fit_needs_three_points():
    with pytest.raises(BatchlabError, match="3 or more"):
        fit_critical_batch([1, 2], [10, 5])


def test_targets():
    t = parse_target("test_acc>=0.95")
    assert (t.metric, t.op, t.value) == ("test_acc", ">=", 0.95) and str(t) == "test_acc>=0.95"
    assert parse_target("train_loss <= 0.1").op == "<="
    for bad, message in (("val_f1>=0.9", "unknown metric 'val_f1'"), ("test_acc>0.9", "must look like"),
                         ("", "must look like")):
        with pytest.raises(BatchlabError, match=message):
            parse_target(bad)


def test_steps_to_target_interpolates_and_best_lr_per_batch():
    history = pd.DataFrame({
        "run_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
        "epoch": [0, 1, 2] * 3,
        "step": [0, 10, 20, 0, 10, 20, 0, 5, 10],
        "samples_seen": [0, 100, 200, 0, 100, 200, 0, 100, 200],
        "wall_time": [0, 1, 2, 0, 1, 2, 0, 1, 2.0],
        "test_acc": [0.1, 0.5, 0.9, 0.1, 0.8, 0.95, 0.1, 0.2, 0.3],
    })
    reached = to_target(history, parse_target("test_acc>=0.7")).set_index("run_id")
    assert reached.loc["a", "steps"] == pytest.approx(15.0)  # halfway between 0.5 (step 10) and 0.9 (step 20)
    assert reached.loc["b", "steps"] == pytest.approx(10 * 0.6 / 0.7)
    assert np.isnan(reached.loc["c", "steps"])
    summary = pd.DataFrame({"run_id": ["a", "b", "c"], "batch_size": [10, 10, 20], "lr": [0.1, 0.3, 0.1],
                            "train_acc": [0.95, 0.97, 0.4], "test_acc": [0.9, 0.95, 0.3]})
    settings = per_setting(summary, history, parse_target("test_acc>=0.7"))
    best = best_per_batch(settings).set_index("batch_size")
    assert best.loc[10, "lr"] == 0.3 and best.loc[20, "reached"] == 0.0
    assert np.isnan(best.loc[20, "lr"])  # no lr reached the target at B=20: no best, not the least bad
    assert settings.set_index("lr").loc[0.1].iloc[0]["gap_acc"] == pytest.approx(0.05)
