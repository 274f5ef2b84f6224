"""The one rule that picks a "best" run (``analysis/selection.py``): never a diverged or blown-up
run, nor one that ends short of the target; the same choice in ``analyze`` and the critical-batch
study; the rule printed; a best lr at the edge of the grid warned about in the terminal."""

import numpy as np
import pandas as pd
import pytest

from batchlab.analysis import critical_batch
from batchlab.analysis.scaling import per_setting
from batchlab.analysis.selection import blown_up, run_health
from batchlab.analysis.sweep import analyse_sweep, sweep_tables
from batchlab.store import Store, series_frame, summary_frame
from batchlab.sweep.run import run_sweep
from batchlab.sweep.spec import SweepSpec
from batchlab.targets import parse_target

STABLE, BLOWUP = 0.05, 0.16
TARGET = "train_loss<=0.05"


def stiff_regression(path, n: int = 64, seed: int = 0) -> None:
    """Two centred, exactly orthogonal features of variance 9 and 1 (and the bias): the mean
    squared error's Hessian is diag(18, 2, 2), so full-batch GD at lr 0.16 shrinks the error
    along the second feature (where the target lies) by 0.68 per step while the tiny error along
    the first grows by |1 - 0.16 x 18| = 1.88 per step. The loss reaches the target within 4
    updates, then climbs to about 1e9 by update 30: finite, the run "finished". At lr 0.05 both
    directions converge; the target takes about 14 updates."""
    rng = np.random.default_rng(seed)

    def rows():
        q, _ = np.linalg.qr(np.column_stack([np.ones(n), rng.normal(size=(n, 2))]))
        x = np.sqrt(n) * q[:, 1:] * np.array([3.0, 1.0])
        return x.astype(np.float32), (x[:, 1] + 1e-4 * x[:, 0]).astype(np.float32)

    (x, y), (x_test, y_test) = rows(), rows()
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)


@pytest.fixture(scope="module")
def blowup_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("blowup")
    stiff_regression(root / "stiff.npz")
    spec = SweepSpec(name="blowup", data=str(root / "stiff.npz"), model="logreg", task="regression", standardize=False,
                     batch_sizes="full", lr=f"{STABLE},{BLOWUP}", seeds=2, budget="epochs=30", target=TARGET)
    run_sweep(spec, root / "sweep.db", executor="local")
    return root


def test_a_finite_blow_up_that_reached_the_target_first_is_not_best(blowup_sweep):
    db = blowup_sweep / "sweep.db"
    with Store(db, create=False) as store:
        runs = store.load(steps=False)
    blown = [r for r in runs if np.isclose(r.config.optimizer.lr, BLOWUP)]
    assert all(r.status == "finished" and np.isfinite(r.history["train_loss"]).all() for r in blown)
    assert all(r.history["train_loss"][-1] > 1e6 for r in blown)  # far above where it started, yet finite
    analysis = analyse_sweep(db)
    steps = analysis.settings.set_index("lr").steps
    assert steps[BLOWUP] < steps[STABLE]  # it crossed the target first: steps alone would choose it
    assert analysis.best.lr.tolist() == [STABLE]


def test_analyze_prints_the_rule_and_warns_about_the_grids_edge(blowup_sweep, cli, monkeypatch):
    monkeypatch.chdir(blowup_sweep)
    code, out, err = cli("analyze", "--db", "sweep.db", "--out", "ana")
    assert code == 0, err
    assert "rule: best lr per B = the fewest mean steps" in out and "blown up" in out
    assert "warning: the best lr is at the edge of the lr grid at B=64 (smallest)" in out


def test_analyze_and_the_critical_batch_study_choose_alike(blowup_sweep):
    with Store(blowup_sweep / "sweep.db", create=False) as store:
        runs = store.load(steps=False)
    history, summary = series_frame(runs, "epoch"), summary_frame(runs)
    target = parse_target(TARGET)
    by_analyze = sweep_tables(history, summary, target)[1]
    by_study = critical_batch.per_batch(per_setting(summary, history, target))
    assert by_analyze.lr.tolist() == by_study.lr.tolist() == [STABLE]


@pytest.mark.parametrize("loss, why", [
    ([2.3, 0.5, 0.3, 0.2, 0.19, 0.2, 0.18], ""),  # noisy near its floor: fine
    ([2.3, 0.5, 0.3, 5.0, 40.0, 300.0], "2 x its start"),  # far above where it started
    ([2.3, 0.4, 0.2, 0.1, 0.2, 0.35, 0.6], "rises over its last 3"),  # turned up: 6x its minimum
    ([2.3, 1.0, np.inf], "not finite"),
])
def test_what_counts_as_blown_up(loss, why):
    found = blown_up(np.array(loss))
    assert (why in found) if why else found == ""


def test_a_run_that_crossed_the_target_but_ended_short_of_it_is_not_usable():
    history = pd.DataFrame({"run_id": ["a"] * 4 + ["b"] * 4, "epoch": [0, 1, 2, 3] * 2,
                            "train_loss": [2.0, 0.09, 0.12, 0.13, 2.0, 0.5, 0.09, 0.08]})
    summary = pd.DataFrame({"run_id": ["a", "b"], "status": ["finished", "finished"]})
    health = run_health(history, summary, parse_target("train_loss<=0.1")).set_index("run_id")
    assert not health.usable["a"] and "ended below the target" in health.why_not["a"]
    assert health.usable["b"]
