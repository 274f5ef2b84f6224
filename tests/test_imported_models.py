"""Models given by import path (``file.py:make_model``): on the command line (train, noise,
sweep), in sweep configs, for sweep workers (worker processes here; a local Ray in
tests/test_sweep.py), with their identity in the run id, and every bad input as one line,
exit 2, nothing stored."""

import textwrap

import pytest

import batchlab
from batchlab.api import prepare
from batchlab.errors import BatchlabError
from batchlab.models.imported import canonical, is_import_path, load
from batchlab.store import Store
from batchlab.sweep.spec import SweepSpec, read_spec

LINEN = '''
import flax.linen as nn


class Net(nn.Module):
    classes: int

    @nn.compact
    def __call__(self, x):
        hidden = nn.Dense({width})(x)
        return nn.Dense(self.classes)(nn.relu(hidden))


def make_model(num_classes):
    return Net(num_classes)
'''

# A plain batchlab.Model (no framework to import): the fast model for the bad-input cases.
LINEAR = '''
import jax
import batchlab


def make_model(input_shape, num_classes):
    def init(key):
        return {{"w": jax.random.normal(key, (input_shape[0], {width})) * 0.1}}, {{}}

    def apply(params, state, x, *, train=False, key=None):
        return {output}, state

    return batchlab.Model(init, apply, "linear")
'''


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def linear(path, width=3, output="x @ params['w']"):
    return write(path, LINEAR.format(width=width, output=output))


def one_line_error(code, out, err, message):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in out + err


def test_train_on_the_command_line_with_a_model_file(cli, tmp_path):
    write(tmp_path / "my_models.py", LINEN.format(width=8))
    code, out, err = cli("train", "--model", "my_models.py:make_model", "--data", "blobs", "--batch-size", "50",
                         "--epochs", "2", "--lr", "0.05")
    assert code == 0, err
    with Store(tmp_path / "batchlab.db") as store:
        (run,) = store.load()
    assert run.config.model.name == f"import:{tmp_path / 'my_models.py'}:make_model"
    assert run.config.model.fingerprint and run.status == "finished"
    assert run.history["train_acc"][-1] > 0.5


BAD = {
    "no file": ("missing.py:make_model", None, "model file {dir}/missing.py does not exist"),
    "no function": ("m.py:build", LINEAR.format(width=3, output="x @ params['w']"),
                    "has no function 'build' (it defines: make_model)"),
    "raises on import": ("m.py:make_model", "import json\nraise ValueError('no weights here')\n",
                         "model file {dir}/m.py raised ValueError on import: no weights here"),
    "syntax error": ("m.py:make_model", "def make_model(:\n", "raised SyntaxError on import"),
    "missing package": ("m.py:make_model", "import not_a_package_batchlab\n",
                        "raised ModuleNotFoundError on import: No module named 'not_a_package_batchlab'"),
    "missing framework": ("m.py:make_model", "import equinox.not_a_module_bl\n",
                          "No module named 'equinox.not_a_module_bl' (pip install 'batchlab[equinox]')"),
    "factory raises": ("m.py:make_model", "def make_model(num_classes):\n    raise RuntimeError('no GPU')\n",
                       "make_model in {dir}/m.py raised RuntimeError: no GPU"),
    "not a model": ("m.py:make_model", "def make_model():\n    return 42\n", "returned int, not a model"),
    "output width": ("m.py:make_model", LINEAR.format(width=5, output="x @ params['w']"),
                     "outputs shape (2, 5) for 2 rows; the data has 3 classes"),
    "not finite": ("m.py:make_model", LINEAR.format(width=3, output="x @ params['w'] / 0.0"),
                   "non-finite outputs (NaN or inf) at initialization"),
    "probabilities": ("m.py:make_model", LINEAR.format(width=3, output="jax.nn.softmax(x @ params['w'])"),
                      "outputs probabilities"),
    "not a path": ("m.py:make-model", None, "write file.py:function"),
    "wrong input": ("m.py:make_model", LINEAR.format(width=3, output="x.T @ params['w']"),
                    "make_model in {dir}/m.py fails on this data (samples of shape (2,), 3 outputs): TypeError"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_model_files_are_one_line_and_store_nothing(cli, tmp_path, case):
    spec, source, message = BAD[case]
    if source is not None:
        write(tmp_path / "m.py", source)
    code, out, err = cli("train", "--model", spec, "--data", "blobs", "--batch-size", "50", "--epochs", "1")
    one_line_error(code, out, err, message.format(dir=tmp_path))
    assert not (tmp_path / "batchlab.db").exists()


def test_a_model_module_that_does_not_import_is_one_line(cli):
    code, out, err = cli("train", "--model", "no_such_package_bl.models:make_model", "--data", "blobs")
    one_line_error(code, out, err, "model module no_such_package_bl.models cannot be imported")


def test_two_files_with_one_function_name_are_different_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = linear(tmp_path / "a" / "models.py"), linear(tmp_path / "b" / "models.py")
    db = tmp_path / "runs.db"
    settings = dict(data="blobs", batch_size=100, epochs=1, db=db)
    first = batchlab.train(model="a/models.py:make_model", **settings)
    second = batchlab.train(model=f"{b}:make_model", **settings)
    assert first.runs[0].run_id != second.runs[0].run_id and not second.skipped
    assert first.runs[0].config.model.name == f"import:{a}:make_model"
    again = batchlab.train(model=f"{a}:make_model", **settings)  # the same file, by absolute path
    assert again.skipped == [first.runs[0].run_id]
    linear(a, output="2 * x @ params['w']")  # another forward pass, same name: a new identity
    (edited,), _, _ = prepare("blobs", f"{a}:make_model", batch_size=100, epochs=1, lr=0.01, hidden=(50,),
                              activation="relu", init="he_uniform", dropout=0.0, standardize=None, test_fraction=0.2,
                              label="label")
    assert edited.model.name == first.runs[0].config.model.name
    assert edited.model.fingerprint != first.runs[0].config.model.fingerprint
    assert edited.run_id != first.runs[0].run_id


def test_import_paths_are_told_from_builtin_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_import_path("mlp") and is_import_path("m.py:f") and is_import_path("pkg.mod:make")
    assert canonical("m.py:f") == f"import:{tmp_path.resolve() / 'm.py'}:f"
    assert canonical("pkg.mod:make") == "import:pkg.mod:make" == canonical("import:pkg.mod:make")
    with pytest.raises(BatchlabError, match="no function 'nope'"):
        load(f"{linear(tmp_path / 'x.py')}:nope")


def test_a_sweep_config_reads_its_model_file_beside_it(tmp_path):
    config = write(tmp_path / "cfg" / "sweep.toml", 'model = "nets/m.py:make_model"\nepochs = 1\n')
    assert read_spec(config).model == f"{tmp_path / 'cfg' / 'nets' / 'm.py'}:make_model"
    assert read_spec(config, model="other.py:f").model == "other.py:f"  # the command line is read from here
    write(config, 'model = "mlp"\n')
    assert read_spec(config).model == "mlp"


SWEEP = ["sweep", "--data", "blobs", "--batch-sizes", "50,100", "--lr", "0.05", "--seeds", "1", "--epochs", "2",
         "--target", "test_acc>=0.5"]


def stored(db):
    with Store(db) as store:
        return {r.run_id: r for r in store.load()}


def test_a_sweep_of_a_model_file_runs_in_worker_processes(cli, tmp_path):
    write(tmp_path / "nets.py", LINEN.format(width=8))
    code, out, err = cli(*SWEEP, "--model", "nets.py:make_model", "--executor", "processes", "--workers", "2")
    assert code == 0, err
    runs = stored(tmp_path / "batchlab.db")
    assert len(runs) == 2 and {r.status for r in runs.values()} == {"finished"}
    assert all(r.config.model.name == f"import:{tmp_path / 'nets.py'}:make_model" for r in runs.values())


def test_a_worker_refuses_a_model_file_edited_after_planning(tmp_path):
    from batchlab.data import load_dataset
    from batchlab.models.resolve import model_for_config
    from batchlab.sweep.run import plan_sweep

    path = linear(tmp_path / "w.py")
    (config, *_) = plan_sweep(SweepSpec(data="blobs", model=f"{path}:make_model", batch_sizes="50", seeds=1))
    dataset = load_dataset(config.data)
    model_for_config(config.model, dataset)  # unchanged: fine
    linear(path, output="x @ params['w'] + 1.0")
    with pytest.raises(BatchlabError, match="fingerprint changed"):
        model_for_config(config.model, dataset)


def test_noise_on_the_command_line_with_a_model_file(cli, tmp_path):
    write(tmp_path / "my_models.py", LINEN.format(width=8))
    code, out, err = cli("noise", "--model", "my_models.py:make_model", "--data", "blobs", "--batch-size", "50",
                         "--at-epochs", "0,1", "--batch-sizes", "1,4", "--trials", "20", "--no-sharpness",
                         "--out", "noise")
    assert code == 0, err
    assert (tmp_path / "noise" / "noise_table.csv").exists()
