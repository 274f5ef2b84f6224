"""The epochs study (best-validation epoch, early stopping by batch size) at quick size, and
the engine facts it relies on: an early-stopped run is its full-budget twin cut short, and
the parameters it restores are those of its best epoch."""

import math

import numpy as np
import pytest
from scipy import stats

from batchlab.analysis.findings import within


def within_band(iv, band):
    return within(iv, -band, band)
from batchlab.analysis.findings import Interval
from batchlab.store import Store
from helpers import quick_study

FIGURES = ("learning_curves_marked", "early_stopping_by_batch")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return quick_study("epochs", tmp_path_factory)


@pytest.fixture(scope="module")
def stored(study):
    """The stored runs as {(batch size, seed): {'full': history, 'early': (history, best_epoch, status)}}."""
    _, db, _ = study
    with Store(db) as store:
        runs = store.load(steps=False)
    pairs: dict = {}
    for run in runs:
        arm = "full" if run.config.early_stopping is None else "early"
        pairs.setdefault((run.config.batch_size, run.config.seed), {})[arm] = run
    return pairs


def test_outputs_written(study):
    result, _, out = study
    for name in FIGURES:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{name}{suffix}").stat().st_size > 100, (name, suffix)
    text = (out / "findings.md").read_text()
    assert text.count("- **") == len(result.findings) == 1 + 2 * len(result.settings["batch_sizes"]) + 1
    assert "inside [-0.01, 0.01], disagrees if entirely outside" in text
    assert (out / "pairs.csv").stat().st_size > 100


def test_early_stopped_run_is_its_full_twin_cut_short(stored, study):
    """Same seeds -> same init and data order: identical records up to the stop epoch."""
    result, _, _ = study
    assert len(stored) == len(result.settings["batch_sizes"]) * result.settings["seeds"]
    for (b, seed), pair in stored.items():
        full, early = pair["full"].history, pair["early"].history
        stop = len(early["epoch"])
        assert stop <= len(full["epoch"])
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "step"):
            np.testing.assert_array_equal(early[key], full[key][:stop], err_msg=f"B={b} seed={seed} {key}")


def test_stopping_rule_and_pair_table_recomputed_from_the_store(stored, study):
    result, _, _ = study
    patience, budget = result.settings["patience"], result.settings["epochs"]
    table = result.tables["pairs"].set_index(["batch_size", "seed"])
    for key, pair in stored.items():
        full, early = pair["full"].history, pair["early"]
        loss = np.asarray(full["test_loss"])
        best = 1 + int(np.argmin(loss[1:]))  # epoch 0 is never a candidate
        stop = int(early.history["epoch"][-1])
        restored = early.best_epoch
        # Keras' rule: stop after `patience` epochs without a strictly lower test loss.
        own = np.asarray(early.history["test_loss"])
        assert restored == 1 + int(np.argmin(own[1:stop + 1]))
        if early.status == "early_stopped":
            assert stop == restored + patience
        else:
            assert stop == budget and budget - restored < patience
        row = table.loc[key]
        assert row.best_epoch == best and row.stop_epoch == stop and row.restored_epoch == restored
        assert row.early_test_acc == pytest.approx(early.history["test_acc"][restored])
        assert row.acc_change == pytest.approx(early.history["test_acc"][restored] - full["test_acc"][-1])
        assert row.updates_saved == full["step"][-1] - early.history["step"][-1]
        assert row.loss_rise == pytest.approx(loss[-1] - loss[best])


def test_accuracy_finding_recomputed_with_its_rule(stored, study):
    result, _, _ = study
    band = result.settings["band"]
    for i, b in enumerate(result.settings["batch_sizes"]):
        diffs = np.array([p["early"].history["test_acc"][p["early"].best_epoch] - p["full"].history["test_acc"][-1]
                          for (size, _), p in stored.items() if size == b])
        half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
        low, high = diffs.mean() - half, diffs.mean() + half
        expected = ("agrees" if -band <= low and high <= band else
                    "disagrees" if low > band or high < -band else "inconclusive")
        finding = result.findings[1 + i]
        assert f"B={b}:" in finding.claim and finding.verdict == expected
        assert f"difference {100 * diffs.mean():.2g} [" in finding.measured
        by_batch = result.tables["by_batch"].set_index("batch_size")
        assert by_batch.loc[b, "acc_change_low"] == pytest.approx(low)
        assert by_batch.loc[b, "acc_change_high"] == pytest.approx(high)


def test_best_epoch_trend_recomputed_from_the_store(stored, study):
    result, _, _ = study
    sizes = sorted(result.settings["batch_sizes"])
    means = [np.mean([1 + np.argmin(np.asarray(p["full"].history["test_loss"])[1:])
                      for (size, _), p in stored.items() if size == b]) for b in sizes]
    slope = np.polyfit(np.log2(sizes), means, 1)[0]
    finding = next(f for f in result.findings if "best-validation epoch" in f.claim)
    assert finding.measured.startswith(f"slope {slope:.3g} ")


def test_savings_pooled_over_batch_sizes(stored, study):
    result, _, _ = study
    budget = result.settings["epochs"]
    fractions = [(budget - p["early"].history["epoch"][-1]) / budget for p in stored.values()]
    assert result.findings[0].measured.startswith(
        f"fraction of the {budget} epochs saved, all B pooled: {100 * np.mean(fractions):.2g} [")


def test_within_band_rule():
    assert within_band(Interval(0.0, -0.004, 0.009, 5), 0.01) == "agrees"
    assert within_band(Interval(-0.05, -0.08, -0.02, 5), 0.01) == "disagrees"
    assert within_band(Interval(0.03, 0.02, 0.04, 5), 0.01) == "disagrees"
    assert within_band(Interval(-0.01, -0.03, 0.0, 5), 0.01) == "inconclusive"
    assert within_band(Interval(0.0, -0.02, 0.02, 5), 0.01) == "inconclusive"
    assert within_band(Interval(0.0, math.nan, math.nan, 1), 0.01) == "inconclusive"


def test_restored_parameters_are_the_best_epochs():
    """Evaluate the parameters an early-stopped run returns: they score exactly what its
    full-budget twin recorded at the best epoch (not what the stop epoch recorded)."""
    import batchlab
    from batchlab.api import prepare
    from batchlab.config import EarlyStopping
    from batchlab.engine.epoch import EpochData, evaluate

    kw = dict(hidden=(32,), batch_size=64, epochs=30, lr=0.05, momentum=0.9, seeds=2)
    stop = EarlyStopping(monitor="test_loss", patience=3, restore_best=True)
    full = batchlab.train("digits", "mlp", **kw)
    early = batchlab.train("digits", "mlp", early_stopping=stop, **kw)
    _, dataset, net = prepare("digits", "mlp", hidden=(32,), activation="relu", init="he_uniform", dropout=0.0,
                              standardize=None, test_fraction=0.2, label="label", batch_size=64, epochs=30, lr=0.05)
    data = EpochData.from_dataset(dataset)
    state = net.init(np.zeros(2, np.uint32))[1]
    stopped = 0
    for twin, run in zip(full.runs, early.runs):
        assert twin.config.seed == run.config.seed
        metrics = evaluate(net, run.params, state, data)
        best = run.best_epoch
        assert float(metrics["test_score"]) == pytest.approx(float(twin.history["test_acc"][best]), abs=1e-6)
        assert float(metrics["test_loss"]) == pytest.approx(float(twin.history["test_loss"][best]), rel=1e-5)
        stopped += run.status == "early_stopped"
    assert stopped >= 1  # the check must cover a run that stopped before the budget
