"""Runs written by a newer batchlab (settings this version does not know): shown with a word,
skipped by what cannot use them, never blocking the other runs; ``check`` agrees with the
commands that read runs."""

import pytest
from conftest import run_cli
from stores import edit_config, made_up_runs, small_store, store_as_newer

from batchlab.config import run_config_from_dict
from batchlab.store import Store, check_integrity
from batchlab.store.export import export_store


@pytest.fixture
def newer_store(tmp_path):
    """Four runs of this version and one a newer batchlab (v9.0.0) stored with a setting set."""
    db = tmp_path / "batchlab.db"
    runs = small_store(db)
    newer = store_as_newer(db, runs[1], {"optimizer.new_knob": 0.5})
    return db, runs, newer


def test_an_unknown_setting_is_named_or_collected():
    config = made_up_runs(1)[0].config
    d = config.to_dict()
    d["optimizer"]["new_knob"], d["phases"], d["new_section"] = 0.5, [{"epoch": 1, "new_field": 2}], {}
    with pytest.raises(ValueError, match="optimizer.new_knob, new_section, phases.new_field"):
        run_config_from_dict(d)
    unknown = []
    back = run_config_from_dict(d, unknown)
    assert unknown == ["optimizer.new_knob", "new_section", "phases.new_field"]
    assert back.optimizer == config.optimizer and back.phases[0].epoch == 1


def test_runs_lists_the_others_and_names_the_newer_run(newer_store, cli):
    db, runs, newer = newer_store
    code, out, err = cli("runs", "--db", db.name)  # in db's folder
    assert code == 0, err
    assert f"4 run(s) in {db.name}" in out and "damaged" not in out + err
    assert all(r.run_id[:8] in out for r in runs) and newer[:8] not in out
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "written by a newer batchlab (v9.0.0)" in notes[0], err
    assert "optimizer.new_knob" in notes[0] and newer[:8] in notes[0]


def test_check_agrees_a_newer_run_is_not_damage(newer_store, capsys):
    db, _, newer = newer_store
    code, out, err = run_cli(["check", "--db", db], capsys)
    assert code == 0, out + err
    out = " ".join(out.split())  # lines wrapped to 80 columns
    assert "4 of 5 runs are readable; 1 written by a newer batchlab" in out
    assert "newer run(s), skipped by this batchlab: 1 run written by a newer batchlab (v9.0.0)" in out
    assert newer[:8] in out and "damaged" not in out and out.strip().endswith(f"{db}: ok")


def test_export_and_load_skip_the_newer_run_and_keep_it(newer_store, tmp_path, capsys):
    db, runs, newer = newer_store
    written = export_store(db, tmp_path / "out")
    assert len((tmp_path / "out" / "runs.csv").read_text().splitlines()) == 1 + len(runs)
    assert written and "v9.0.0" in capsys.readouterr().err
    with Store(db, create=False) as store:
        assert [r.run_id for r in store.load()] == [r.run_id for r in runs]
        assert list(store.newer) == [newer] and store.newer[newer].settings == ("optimizer.new_knob",)
        assert newer in store.run_ids()  # kept: the newer batchlab still reads it


def test_a_setting_left_out_of_the_id_is_read_as_the_same_run(tmp_path, capsys):
    """A setting at its default does not enter a run's id: a stored id equal to the id of the
    known settings means the unknown ones hold their defaults, so the run is this version's run."""
    db = tmp_path / "batchlab.db"
    runs = small_store(db, n=2)
    edit_config(db, runs[0].run_id, lambda c: {**c, "optimizer": {**c["optimizer"], "new_knob": 0.0}})
    with Store(db, create=False) as store:
        assert [r.config for r in store.load()] == [r.config for r in runs] and not store.newer
    assert "note:" not in capsys.readouterr().err
    assert check_integrity(db).sound


def test_a_damaged_record_is_damage_for_check_as_for_runs(tmp_path, capsys):
    db = tmp_path / "batchlab.db"
    runs = small_store(db, n=3)
    edit_config(db, runs[2].run_id, lambda c: {k: v for k, v in c.items() if k != "model"})
    code, out, err = run_cli(["runs", "--db", db], capsys)
    assert code == 2 and "is damaged" in err and "2 of 3 runs are readable" in err
    code, out, err = run_cli(["check", "--db", db], capsys)
    assert code == 1, out
    out = " ".join(out.split())  # lines wrapped to 80 columns
    assert f"damaged run(s): {runs[2].run_id[:8]}" in out and out.strip().endswith("never writes to it "
                                                                                   "(export what is readable, "
                                                                                   "or re-run the damaged runs "
                                                                                   "into a new --db)")


def test_train_with_a_newer_run_in_the_store(tmp_path, capsys):
    """train reads the runs it already has around a newer run, and leaves the newer run alone."""
    import batchlab
    from batchlab.api import prepare

    db = tmp_path / "batchlab.db"
    settings = dict(hidden=(4,), batch_size="50", epochs=2, lr=0.05, seeds=2)
    configs = prepare("blobs", "mlp", **settings)[0]
    runs = [type(r)(c, r.status, r.history, r.steps, r.best_epoch) for r, c in zip(made_up_runs(2), configs)]
    with Store(db) as store:
        store.write(runs, batchlab.__version__)
    newer = store_as_newer(db, runs[0], {"model.new_norm": "batch"})
    # A newer batchlab's run whose new setting has its default: the same id as this version's run.
    edit_config(db, runs[1].run_id, lambda c: {**c, "model": {**c["model"], "new_norm": "none"}})
    result = batchlab.train("blobs", "mlp", db=db, **settings)
    assert result.skipped == [c.run_id for c in configs]
    assert [r.history["test_acc"].tolist() for r in result.runs] == [r.history["test_acc"].tolist() for r in runs]
    with Store(db, create=False) as store:
        assert store.run_ids() == {newer, *(c.run_id for c in configs)}
