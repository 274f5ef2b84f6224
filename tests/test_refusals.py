"""What used to be accepted in silence, or checked only after training: each is refused in one
line before anything trains (issue: nothing silently wrong, nothing checked too late)."""

import numpy as np
import pytest

import batchlab
from batchlab.data import from_arrays
from batchlab.errors import BatchlabError
from batchlab.studies import get_study
from batchlab.sweep.run import prepare_sweep
from batchlab.sweep.spec import SweepSpec
from tests.conftest import run_cli

X = np.random.default_rng(0).normal(size=(40, 3))


@pytest.mark.parametrize("settings, message", [
    (dict(lr=1e300), "cannot be held in float32"),  # inf in float32
    (dict(lr=1e-50), "cannot be held in float32"),  # 0 in float32: a flat 'finished' run
    (dict(optimizer="adam", eps=1e-60), "cannot be held in float32"),
    (dict(batch_size="3_2"), "batch size must be an integer, got '3_2'"),  # int() would read 32
    (dict(epochs="３"), "epochs must be an integer"),  # full-width digit
    (dict(lr="1_0"), "learning rate must be a number"),
    (dict(schedule="step", decay_epochs="12", epochs=10), "after epoch 12 never applies"),
    (dict(decay=0.5), "decay applies to a step, cosine or linear schedule"),
    (dict(schedule="cosine", decay_epochs="3"), "decay_epochs apply to a step schedule"),
    (dict(warmup_epochs=1e9, epochs=3), "longer than the run"),
    (dict(hidden=(300_000_000,)), "parameters"),  # refused from shapes alone, nothing allocated
])
def test_settings_accepted_in_silence_before_are_refused(settings, message):
    with pytest.raises(BatchlabError, match=message):
        batchlab.api.prepare(**settings)


def test_np_integers_are_read_as_integers():
    configs, _, _ = batchlab.api.prepare(epochs=np.int64(3), batch_size=np.int64(50), seeds=np.int64(2))
    assert {c.epochs for c in configs} == {3} and {c.batch_size for c in configs} == {50} and len(configs) == 2


@pytest.mark.parametrize("target", ["test_acc>=2", "test_loss<=-1", "train_acc<=-0.5"])
def test_targets_no_run_can_reach_are_refused(target):
    with pytest.raises(BatchlabError, match="no run can reach"):
        SweepSpec(target=target)


def test_a_sweep_grid_is_checked_for_memory_as_a_whole(monkeypatch):
    """Each batch size's runs fit alone; all of them together do not."""
    import batchlab.grid

    spec = SweepSpec(data="blobs", hidden=(4,), batch_size="1,2,4,8", lr=0.1, seeds=4, budget="epochs=50")
    configs = prepare_sweep(spec)[0]
    biggest = max(batchlab.grid.memory_estimate([c for c in configs if c.batch_size == b], 500) for b in (1, 2, 4, 8))
    total = batchlab.grid.memory_estimate(configs, 500)
    assert biggest < total
    monkeypatch.setattr(batchlab.grid, "memory_limit", lambda: (biggest + total) // 2)
    with pytest.raises(BatchlabError, match="would record about"):
        prepare_sweep(spec)


@pytest.mark.parametrize("y, message", [
    (np.array([0.0, 1e20, 2e20] * 13 + [0.0]), "too large to be read exactly"),  # int64 cast overflowed
    (np.array(["1", "0"] * 20), "must be integer class labels, got <U1"),  # text that reads as numbers
])
def test_labels_that_cannot_be_read_exactly_are_refused(y, message):
    with pytest.raises(BatchlabError, match=message):
        from_arrays(X, y)


@pytest.mark.parametrize("x, message", [
    (X.astype(complex), "complex numbers"),
    (X.astype(str), "text or objects"),
    (X * 1e39, "beyond float32's range"),
])
def test_features_that_cannot_be_held_are_refused(x, message):
    with pytest.raises(BatchlabError, match=message):
        from_arrays(x, np.arange(40) % 2)


def test_a_csv_with_a_repeated_column_is_refused(tmp_path):
    path = tmp_path / "twice.csv"
    path.write_text("a,label,label\n" + "".join(f"{i},{i % 2},{i % 3}\n" for i in range(30)))
    with pytest.raises(BatchlabError, match=r"column name\(s\) \['label'\] more than once"):
        batchlab.api.prepare(data=str(path))


@pytest.mark.parametrize("study, key, value, message", [
    ("brownlee", "threshold", "nan", "threshold=nan must be finite"),
    ("brownlee", "threshold", "5", "within \\[0.0, 1.0\\]"),
    ("brownlee", "last_epochs", "500", "last_epochs=500"),
    ("lr-recovery", "switch_fraction", "1.5", "switch_fraction=1.5"),
    ("convex", "updates", "-5", "updates=-5"),
    ("convex", "fractions", "0.0", "fractions=0.0"),
    ("critical-batch", "target", "bogus", "target must look like"),
])
def test_study_settings_are_checked_before_training(study, key, value, message, capsys, tmp_path):
    code, _, err = run_cli(["study", study, "--quick", "--set", f"{key}={value}", "--db", tmp_path / "s.db",
                            "--out", tmp_path / "out"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "s.db").exists()  # nothing trained, nothing stored
    get_study(study).settings(quick=True)  # the defaults pass their own limits


def test_plan_reads_its_numbers_as_every_setting_does(capsys):
    code, out, _ = run_cli(["plan", "--n", "200", "-b", "5", "-e", "1e3"], capsys)
    assert code == 0 and "40,000 updates" in out
    for args in (["-e", "-3"], ["-e", "x"], ["-b", "3_2", "-e", "3"]):
        code, _, err = run_cli(["plan", "--n", "200", "-b", "5", *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")


def test_the_tour_checks_its_report_folder_before_any_study(capsys, tmp_path):
    taken = tmp_path / "report"
    taken.write_text("a file")
    code, _, err = run_cli(["tour", "--report", taken, "--db", tmp_path / "t.db", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "it is a file, not a folder" in err
    assert not (tmp_path / "t.db").exists()


def test_noise_refuses_trials_nobody_means(capsys, tmp_path):
    code, _, err = run_cli(["noise", "--trials", "100000000", "--db", tmp_path / "n.db", "--out", tmp_path / "o"],
                           capsys)
    assert code == 2 and "trials must lie in [2, 1,000,000]" in err


@pytest.mark.parametrize("model, data", [("mlp", "blobs"), ("cnn", "digits")])
def test_the_activation_estimate_brackets_what_xla_allocates(model, data):
    """The per-row activation count that sizes a plan before anything is allocated, against
    XLA's own memory plan for the compiled forward pass (evaluation) and a gradient (training)
    of 64 runs at once: within a factor of 2.5 either way."""
    import jax
    import jax.numpy as jnp

    from batchlab.models.base import activation_count

    _, dataset, net = batchlab.api.prepare(data=data, model=model)
    per_row = activation_count(net, jax.ShapeDtypeStruct(dataset.x_train.shape[1:], dataset.x_train.dtype))
    runs, rows = 64, 256
    params, state = jax.vmap(net.init)(jax.random.split(jax.random.PRNGKey(0), runs))
    x = jnp.asarray(dataset.x_train[:rows])

    def forward(p, s):
        return net.apply(p, s, x, train=False, key=None)[0]

    def gradient(p, s):
        return jax.grad(lambda p: net.apply(p, s, x, train=True, key=jax.random.PRNGKey(1))[0].sum())(p)

    estimate = per_row * rows * runs * 4
    for program in (forward, gradient):
        plan = jax.jit(jax.vmap(program)).lower(params, state).compile().memory_analysis()
        held = plan.temp_size_in_bytes + plan.output_size_in_bytes
        assert estimate / 2.5 <= held <= estimate * 2.5, (program.__name__, held, estimate)
