"""The regularization study at quick size: its runs are what the arms say, and its tables and
findings are recomputed from the store with independent code (numpy, scipy)."""

import math

import numpy as np
import pytest
from scipy import stats

from batchlab.store import Store
from helpers import quick_study

FIGURES = ("test_loss_by_regulariser", "generalization_gap_by_regulariser", "accuracy_by_batch")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return quick_study("regularization", tmp_path_factory)


def arm_of(config) -> str:
    """The arm a stored run belongs to, read from its settings alone."""
    if config.model.norm != "none":
        return "ghost batch norm" if config.model.norm == "ghost" else "batch norm"
    if config.model.dropout > 0:
        return "dropout"
    return "weight decay" if config.optimizer.weight_decay > 0 else "none"


@pytest.fixture(scope="module")
def stored(study):
    """{(arm, B): [history of each seed, by seed]} read back from the store."""
    _, db, _ = study
    with Store(db) as store:
        runs = store.load(steps=False)
    out: dict = {}
    for run in sorted(runs, key=lambda r: r.config.seed):
        out.setdefault((arm_of(run.config), run.config.batch_size), []).append(run)
    return out


def welch(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    d = a.mean() - b.mean()
    return d, max(d - half, -1.0), min(d + half, 1.0)


def final_acc(runs):
    return [r.history["test_acc"][-1] for r in runs]


def test_outputs_and_the_arms_each_batch_size_trains(study, stored):
    result, _, out = study
    s = result.settings
    for name in FIGURES:
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{name}{suffix}").stat().st_size > 100, (name, suffix)
    assert (out / "findings.md").read_text().count("- **") == len(result.findings) == 7
    for b in s["batch_sizes"]:
        arms = {arm for arm, size in stored if size == b}
        expected = {"none", "dropout", "weight decay", "batch norm"} | ({"ghost batch norm"} if b > s["ghost_size"]
                                                                        else set())
        assert arms == expected, b
        for arm in arms:
            runs = stored[(arm, b)]
            assert len(runs) == s["seeds"] and runs[0].config.epochs == s["epochs"]
            assert len(runs[0].history["test_acc"]) == s["epochs"] + 1
    ghost = next(r for (arm, _), runs in stored.items() if arm == "ghost batch norm" for r in runs)
    assert ghost.config.model.ghost_size == s["ghost_size"]
    assert all(r.config.data.name == f"{s['data']}, {s['train_rows']} training rows"
               for runs in stored.values() for r in runs)


def test_run_table_recomputed_from_the_store(study, stored):
    result, _, _ = study
    table = result.tables["runs"].set_index("run_id")
    for runs in stored.values():
        for run in runs:
            h = {k: np.asarray(v, float) for k, v in run.history.items()}
            row = table.loc[run.run_id]
            low = h["test_loss"][1:].min()
            assert row.final_test_acc == pytest.approx(h["test_acc"][-1])
            assert row.best_test_acc == pytest.approx(h["test_acc"][1:].max())
            assert row.final_gap == pytest.approx(h["train_acc"][-1] - h["test_acc"][-1])
            assert row.loss_ratio == pytest.approx(h["test_loss"][-1] / low)
            assert row.best_epoch == 1 + int(np.argmin(h["test_loss"][1:]))


def test_gains_and_the_ghost_finding_recomputed_with_welch(study, stored):
    result, _, _ = study
    s = result.settings
    gains = result.tables["gains"].set_index(["arm", "batch_size"])
    for (arm, b), runs in stored.items():
        if arm == "none":
            continue
        d, low, high = welch(final_acc(runs), final_acc(stored[("none", b)]))
        assert gains.loc[(arm, b)].gain == pytest.approx(d)
        assert (gains.loc[(arm, b)].gain_low, gains.loc[(arm, b)].gain_high) == pytest.approx((low, high))
    small, large = min(s["batch_sizes"]), max(s["batch_sizes"])
    d, low, high = welch(final_acc(stored[("ghost batch norm", large)]), final_acc(stored[("batch norm", large)]))
    _, gap_low, _ = welch(final_acc(stored[("batch norm", small)]), final_acc(stored[("batch norm", large)]))
    finding = next(f for f in result.findings if f.claim.startswith("ghost batch norm"))
    assert f"ghost minus batch norm at B={large}: {100 * d:.2g} [" in finding.measured
    if gap_low <= 0:
        assert finding.verdict == "inconclusive" and "no clear large-batch gap" in finding.reason
    else:
        assert finding.verdict == ("agrees" if low > 0 else "disagrees" if high < 0 else "inconclusive")


def test_no_late_overfit_findings_recomputed(study, stored):
    """The seed's claim at the moderate B: the ratio final / lowest test loss, geometric mean and
    t-interval on log values, against 1 + RISE; tested only where no regularisation over-fits."""
    result, _, _ = study
    sizes = sorted(result.settings["batch_sizes"])
    b = sizes[(len(sizes) - 1) // 2]

    def log_interval(runs):
        logs = np.log([r.history["test_loss"][-1] / min(r.history["test_loss"][1:]) for r in runs])
        half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
        return math.exp(logs.mean()), max(math.exp(logs.mean() - half), 1.0), max(math.exp(logs.mean() + half), 1.0)

    _, plain_low, _ = log_interval(stored[("none", b)])
    for arm in ("dropout", "batch norm"):
        mean, low, high = log_interval(stored[(arm, b)])
        finding = next(f for f in result.findings if f.claim.startswith(f"with {arm} at a moderate B (B={b})"))
        assert finding.measured.startswith(f"final / lowest test loss {mean:.3g} [")
        if plain_low <= 1.2:
            assert finding.verdict == "inconclusive" and "does not clearly over-fit" in finding.reason
        else:
            assert finding.verdict == ("agrees" if high < 1.2 else "disagrees" if low > 1.2 else "inconclusive")
