"""Every declared setting reaches every interface: ``batchlab.train``, ``batchlab train``,
``batchlab sweep`` and a sweep's config file accept it and read it alike, and refuse the same
bad value with the same message (parametrized over the declaration in ``settings.py``)."""

import pytest

import batchlab.api
import batchlab.sweep.run
from batchlab.errors import BatchlabError
from batchlab.settings import BY_NAME, SWEEP, TRAINING, read_given
from batchlab.sweep.run import prepare_sweep
from batchlab.sweep.spec import read_spec
from tests.conftest import run_cli

# What a setting needs beside it to mean something (a beta needs Adam, a monitor early stopping).
COMPANIONS = {
    "task": {"data": "diabetes", "batch_size": 32},
    "phases": {"epochs": 20},
    "beta1": {"optimizer": "adam"}, "beta2": {"optimizer": "adam"}, "eps": {"optimizer": "adam"},
    "decay_epochs": {"schedule": "step", "epochs": 50},
    "decay": {"schedule": "step", "decay_epochs": "2"},
    "norm": {"batch_size": 32}, "ghost_size": {"norm": "ghost", "batch_size": 32},
    "monitor": {"patience": 5}, "min_delta": {"patience": 5}, "restore_best": {"patience": 5},
}
# A bad value every interface can give (as text), for each setting that takes text.
BAD = {
    "data": "", "standardize": "maybe", "test_fraction": "1.5", "label": "", "task": "cubic", "model": "",
    "hidden": "a,b", "activation": "cubic", "init": "ones", "dropout": "1", "norm": "layer",
    "ghost_size": "1", "batch_size": "0", "epochs": "abc",
    "seeds": "-1", "reduction": "median", "drop_last": "maybe", "shuffle": "sometimes", "micro_batch": "0", "devices": "0",
    "phases": "x", "optimizer": "rmsprop", "lr": "-1", "momentum": "1", "nesterov": "maybe", "weight_decay": "-1",
    "beta1": "1", "beta2": "1.5", "eps": "0", "clip_norm": "0", "schedule": "exponential", "decay_epochs": "0",
    "decay": "2", "warmup_epochs": "-1", "init_seed": "-1", "data_seed": "x", "dropout_seed": "1.5",
    "patience": "0", "monitor": "test_r2", "min_delta": "-1", "restore_best": "maybe", "instruments": "hessian_wow",
    "name": "", "budget": "hours=3", "target": "acc>1", "lr_scaling": "cubic", "base_lr": "0", "base_batch": "0",
}
TRAINING_NAMES = [s.name for s in TRAINING]
SWEEP_NAMES = [s.name for s in SWEEP]


class Reached(Exception):
    """Raised by a stand-in where a command hands its settings over: nothing trains."""


def test_every_setting_has_a_bad_value_here():
    assert set(BAD) == set(BY_NAME)


def cli_args(values: dict) -> list[str]:
    args = []
    for name, value in values.items():
        option = BY_NAME[name].option
        if BY_NAME[name].flag:
            args.append(option if value in (True, "true") else f"--no-{option[2:]}")
        else:
            args += [option, str(value)]
    return args


def toml(values: dict) -> str:
    def text(value):
        return ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'
    return "".join(f"{name} = {text(value)}\n" for name, value in values.items())


def python_value(name: str, value) -> object:
    """What ``batchlab.train`` makes of ``value`` (prepare succeeds: the runs resolve)."""
    given = {**COMPANIONS.get(name, {}), name: value}
    configs, _, _ = batchlab.api.prepare(**given)
    assert configs
    return read_given(given)[name]


@pytest.mark.parametrize("name", TRAINING_NAMES)
def test_every_training_setting_is_read_alike_everywhere(name, capsys, tmp_path, monkeypatch):
    setting = BY_NAME[name]
    want = python_value(name, setting.example)
    assert want == setting.read(setting.example) and want != setting.read(setting.default)
    given = {**COMPANIONS.get(name, {}), name: setting.example}

    seen = {}

    def stop_train(**settings):
        seen["train"] = read_given(settings)[name]
        raise Reached

    def stop_sweep(spec):
        seen["sweep"] = spec.values()["budget"] if name == "epochs" else spec.values()[name]
        raise Reached

    monkeypatch.setattr(batchlab.api, "prepare", stop_train)
    monkeypatch.setattr(batchlab.sweep.run, "prepare_sweep", stop_sweep)
    for command in ("train", "sweep"):
        with pytest.raises(Reached):
            run_cli([command, *cli_args(given), "--db", tmp_path / "x.db"], capsys)
    assert seen["train"] == want
    assert seen["sweep"] == (f"epochs={want}" if name == "epochs" else want)
    monkeypatch.undo()

    config = tmp_path / "sweep.toml"
    config.write_text(toml(given))
    spec = read_spec(config)
    assert (spec.values()["budget"] == f"epochs={want}") if name == "epochs" else spec.values()[name] == want
    assert prepare_sweep(spec)[0]


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_every_sweep_setting_is_read_alike_by_the_command_and_a_config_file(name, capsys, tmp_path, monkeypatch):
    setting = BY_NAME[name]
    want = setting.read(setting.example)
    seen = {}

    def stop_sweep(spec):
        seen["sweep"] = spec.values()[name]
        raise Reached

    monkeypatch.setattr(batchlab.sweep.run, "prepare_sweep", stop_sweep)
    with pytest.raises(Reached):
        run_cli(["sweep", setting.option, str(setting.example), "--db", tmp_path / "x.db"], capsys)
    assert seen["sweep"] == want
    config = tmp_path / "sweep.toml"
    config.write_text(toml({name: setting.example}))
    assert read_spec(config).values()[name] == want


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", TRAINING_NAMES + SWEEP_NAMES)
def test_a_bad_value_gets_the_same_message_everywhere(name, capsys, tmp_path):
    setting = BY_NAME[name]
    given = {**COMPANIONS.get(name, {}), name: BAD[name]}
    if setting in TRAINING:
        with pytest.raises(BatchlabError) as refused:
            batchlab.api.prepare(**given)
        message = one_line(str(refused.value))
    else:
        with pytest.raises(BatchlabError) as refused:
            batchlab.sweep.spec.SweepSpec(**given)
        message = one_line(str(refused.value))
    assert message and "Traceback" not in message

    commands = ["sweep"] if setting in SWEEP else ["train", "sweep"]
    for command in commands if not setting.flag else []:  # a flag cannot be given a bad value there
        code, out, err = run_cli([command, *cli_args(given), "--db", tmp_path / "x.db"], capsys)
        assert code == 2 and err.strip() == f"error: {message}", (command, err)
    assert not (tmp_path / "x.db").exists()  # refused before any store was made

    config = tmp_path / "sweep.toml"
    config.write_text(toml(given))
    with pytest.raises(BatchlabError) as refused:
        prepare_sweep(read_spec(config))
    assert one_line(str(refused.value)) in (message, f"sweep config {config}: {message}")


def test_an_unknown_setting_is_refused_with_the_known_ones(capsys, tmp_path):
    with pytest.raises(BatchlabError, match="unknown setting 'learning_rate'; known: data, standardize"):
        batchlab.api.prepare(learning_rate=0.1)
    config = tmp_path / "sweep.toml"
    config.write_text('learning_rate = 0.1\n')
    with pytest.raises(BatchlabError, match="unknown key"):
        read_spec(config)
    code, _, err = run_cli(["train", "--learning-rate", "0.1"], capsys)
    assert code == 2 and "No such option" in err


def test_the_sweeps_older_names_still_work(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text('batch_sizes = [8, 16, "full"]\nepochs = 3\n')
    spec = read_spec(config)
    assert spec.values()["batch_size"] == [8, 16, "full"] and spec.values()["budget"] == "epochs=3"


def test_help_lists_come_from_the_registries():
    from batchlab.data.builtin import BUILTIN
    from batchlab.instruments import PRESETS
    from batchlab.models.catalog import MODELS

    assert all(name in BY_NAME["data"].help for name in BUILTIN)
    assert all(name in BY_NAME["model"].help for name in MODELS)
    assert all(name in BY_NAME["instruments"].help for name in PRESETS["full"])  # every built-in instrument


def test_the_settings_reference_in_docs_is_the_declarations():
    from pathlib import Path

    from batchlab.cli.options import settings_reference as reference

    assert (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text() == reference()
