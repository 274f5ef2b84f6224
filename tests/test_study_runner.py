"""The study runner: settings, resumption after SIGKILL, the CLI, findings' statistics, store upgrades,
and the order in which a command finishes several studies."""

import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from helpers import batchlab_flags_env, kill_after_first_stored_run
from scipy import stats

from batchlab.analysis.findings import compare, interval, trend
from batchlab.errors import BatchlabError
from batchlab.store import Store
from batchlab.studies import REGISTRY, available, get_study
from batchlab.studies.runner import finish_in_turn


def test_every_registered_study_exists_and_declares_its_sizes():
    assert available() == list(REGISTRY)
    for name in REGISTRY:
        study = get_study(name)
        assert study.name == name and study.question.endswith("?") and study.source
        assert study.quick and set(study.quick) <= set(study.defaults)


def test_settings_are_typed_like_their_defaults():
    study = get_study("brownlee")
    settings = study.settings(quick=True, overrides={"seeds": "4", "sweep_batch_sizes": "8,64", "sweep_lr": "0.1"})
    assert settings["seeds"] == 4 and settings["sweep_batch_sizes"] == (8, 64) and settings["sweep_lr"] == 0.1
    assert settings["epochs"] == study.quick["epochs"]
    with pytest.raises(BatchlabError, match="has no setting 'sedes'"):
        study.settings(overrides={"sedes": "3"})
    with pytest.raises(BatchlabError, match="seeds='x' must be a int"):
        study.settings(overrides={"seeds": "x"})


def test_interval_and_verdicts_against_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.3, 6), rng.normal(0.2, 0.5, 9)
    iv = interval(a)
    low, high = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    diff, verdict = compare(a, b, "greater")
    welch = stats.ttest_ind(a, b, equal_var=False)
    assert verdict == "agrees" and (welch.pvalue < 0.05)
    assert compare(a, b, "less")[1] == "disagrees"
    assert compare(a[:1], b, "greater")[1] == "inconclusive"  # one seed: no interval
    # A slope over x with the values of each group: compare with an independent OLS on the means.
    xs = [1, 2, 4, 8]
    groups = [rng.normal(0.1 * np.log2(x), 0.01, 5) for x in xs]
    slope, verdict = trend(xs, groups, "increasing")
    assert slope.mean == pytest.approx(np.polyfit(np.log2(xs), [g.mean() for g in groups], 1)[0])
    assert verdict == "agrees" and trend(xs, groups, "decreasing")[1] == "disagrees"
    flat = [np.array([-1.0, 1.0]) + 0.001 * k for k in range(4)]  # tiny slope, large spread
    assert trend(xs, flat, "increasing")[1] == "inconclusive"


def test_study_cli_list_set_and_errors(cli):
    code, out, err = cli("study", "list")
    assert code == 0 and all(name in out for name in REGISTRY)
    code, _, err = cli("study", "brownlee", "--set", "nope=1")
    assert code == 2 and "has no setting 'nope'" in err and "Traceback" not in err
    code, _, err = cli("study", "brownlee", "--set", "seeds")
    assert code == 2 and "key=value" in err
    code, _, err = cli("study", "bogus")
    assert code == 2 and "unknown study 'bogus'" in err


def test_a_study_killed_midway_resumes_and_stores_each_run_once(tmp_path):
    db, out = tmp_path / "runs.db", tmp_path / "out"
    command = [sys.executable, "-m", "batchlab.cli", "study", "brownlee", "--quick", "--set", "seeds=2",
               "--db", str(db), "--out", str(out)]
    kill_after_first_stored_run(command, db)
    with Store(db) as store:
        first = store.run_ids()
        assert "brownlee" not in store.studies()
    assert 0 < len(first)
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=400, env=batchlab_flags_env())
    assert rerun.returncode == 0, rerun.stderr
    with sqlite3.connect(db) as conn:
        ids = [r for (r,) in conn.execute("SELECT run_id FROM runs")]
    assert len(ids) == len(set(ids)) and first <= set(ids)
    with Store(db) as store:
        record = store.studies()["brownlee"]
    groups = record["groups"]
    assert set(ids) == {r for members in groups.values() for r in members}
    assert (out / "findings.md").exists()


def test_a_schema_2_store_is_upgraded_in_place(tmp_path):
    db = tmp_path / "old.db"
    with Store(db):
        pass
    with sqlite3.connect(db) as conn:  # make it look like a store written by the previous version
        conn.execute("DROP TABLE studies")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with Store(db) as store:
        store.write_study("x", {"settings": {}})
        assert store.studies() == {"x": {"settings": {}}}


# Several studies in one command: each is finished (findings.md written, the study recorded) once
# its figures are drawn, looked at after each next study has trained; all at the end.
class _Pending:
    def __init__(self, name: str, events: list[str], drawn: bool):
        self.name, self.events, self.drawn = name, events, drawn

    def ready(self) -> bool:
        return self.drawn

    def finish(self) -> str:
        self.events.append(f"finish {self.name}")
        return self.name


def _started(names: list[str], events: list[str], drawn: bool = True, fails: str | None = None):
    for name in names:
        events.append(f"start {name}")
        if name == fails:
            raise BatchlabError(f"{name} cannot start")
        yield _Pending(name, events, drawn)


def test_a_study_whose_figures_are_drawn_is_finished_once_the_next_one_has_trained():
    events: list[str] = []
    assert list(finish_in_turn(_started(["a", "b", "c"], events))) == ["a", "b", "c"]
    assert events == ["start a", "start b", "finish a", "start c", "finish b", "finish c"]


def test_figures_still_being_drawn_are_waited_for_only_after_the_last_study():
    events: list[str] = []
    assert list(finish_in_turn(_started(["a", "b", "c"], events, drawn=False))) == ["a", "b", "c"]
    assert events == ["start a", "start b", "start c", "finish a", "finish b", "finish c"]


def test_a_study_that_cannot_start_still_lets_those_before_it_finish():
    events: list[str] = []
    finished = []
    with pytest.raises(BatchlabError, match="c cannot start"):
        for result in finish_in_turn(_started(["a", "b", "c"], events, drawn=False, fails="c")):
            finished.append(result)
    assert events == ["start a", "start b", "start c", "finish a", "finish b"]
    assert finished == []  # finished for their files and records; the error is what the command reports


def test_no_studies_finish_nothing():
    assert list(finish_in_turn(iter([]))) == []
