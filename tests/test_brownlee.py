"""Brownlee's experiment (science.md section 2) through the study runner, at quick size."""

import numpy as np
import pandas as pd
import pytest

from batchlab.studies import get_study
from batchlab.studies.runner import run_study
from batchlab.store import Store


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("brownlee")
    db, out = root / "runs.db", root / "out"
    return run_study(get_study("brownlee"), quick=True, db=db, out=out), db, out


def test_orderings_of_science_md_hold(study):
    result, _, _ = study
    assert [f.verdict for f in result.findings] == ["agrees"] * 3, [f.markdown() for f in result.findings]
    summary = result.tables["summary"].set_index("group")
    assert summary.loc["SGD, B=1, lr=0.01", "late_test_acc"] < summary.loc["mini-batch, B=32", "late_test_acc"] - 0.1
    assert 0.75 <= summary.loc["mini-batch, B=32", "test_acc"] <= 0.88


def test_a_finding_recomputed_from_the_store(study):
    result, db, _ = study
    with Store(db) as store:
        runs = store.load(steps=False)
    # Mean test accuracy of B=1 at lr 0.01 over the last epochs, straight from the stored per-epoch series.
    last = result.settings["last_epochs"]
    finals = [r.history["test_acc"][-last:].mean() for r in runs
              if r.config.batch_size == 1 and np.isclose(r.config.optimizer.lr, 0.01)]
    assert len(finals) == result.settings["seeds"]
    mean = f"{np.mean(finals):.3g}"
    assert f"B=1 lr 0.01: {mean} [" in result.findings[2].measured
    # Epoch to 80%: recomputed independently for B=256 of the sweep.
    epochs = []
    for r in runs:
        if r.config.batch_size == 256:
            hit = np.flatnonzero(r.history["test_acc"] >= 0.8)
            epochs.append(r.history["epoch"][hit[0]] if len(hit) else np.nan)
    sweep = result.tables["sweep"].set_index("batch_size")
    assert sweep.loc[256, "epoch_to_threshold"] == pytest.approx(np.nanmean(epochs))


def test_outputs_and_study_record(study):
    result, db, out = study
    for name in ("learning_curves_acc", "learning_curves_loss", "sweep_learning_curves", "stability_vs_batch"):
        for suffix in (".png", ".svg", ".csv"):
            assert (out / f"{name}{suffix}").stat().st_size > 100
    text = (out / "findings.md").read_text()
    assert text.count("**agrees**") == 3 and "makes 100 updates while" in text and "50,000" in text
    with Store(db) as store:
        record = store.studies()["brownlee"]
        stored = {r.run_id for r in store.load(steps=False)}
    assert record["quick"] is True and record["settings"]["seeds"] == 3
    assert set(result.run_ids) == stored and record["version"]
    assert len(pd.read_csv(out / "runs.csv")) == len(result.run_ids) + 3  # B=32 is in both groups


def test_rerun_trains_nothing(study, monkeypatch):
    result, db, out = study
    import batchlab.engine.backends

    def fail(*args, **kwargs):
        raise AssertionError("a stored study must not train again")

    monkeypatch.setattr(batchlab.engine.backends, "train_cohort", fail)
    again = run_study(get_study("brownlee"), quick=True, db=db, out=out)
    assert [f.measured for f in again.findings] == [f.measured for f in result.findings]
