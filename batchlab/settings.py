"""Every training setting a user can give, declared once.

A :class:`Setting` says its name, default, help, unit, how a given value is read (text from
the command line or a config file; a number, text or list from Python) and whether it may
be a list of alternatives (a *grid axis*: one run per value). From this one declaration come
the options of ``batchlab train`` and ``batchlab sweep`` (``cli/options.py``), the keys of a
sweep config file (``sweep/spec.py``), the keywords of ``batchlab.train`` (``api.py``) and
their validation, so the same bad value gets the same message wherever it is given. Where a
value lands in a run's resolved config is ``grid.py``; every training setting changes the
numbers of a run, so every one enters its id (``config.identity``), except while it has the
default it had when it was added.

Adding a setting: its :class:`Setting` here, and the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from batchlab.config import NORMS, OPTIMIZERS, REDUCTIONS, SCHEDULES, SHUFFLE_MODES, TASKS, EarlyStopping
from batchlab.errors import BatchlabError
from batchlab.parsing import (boolean, choice_of, choices_of, device_count_value, epoch_list, integer_at_least,
                              number_of, numbers_of, parse_batch_sizes, parse_budget, parse_phases, parse_seeds,
                              parse_widths, seed_value, text_value)
from batchlab.targets import parse_target

SCALING_RULES = ("linear", "sqrt")
# Weight decay of each optimizer when none is given: PyTorch's defaults (SGD and Adam: none;
# AdamW: 0.01, where optax's is 1e-4).
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}


@dataclass(frozen=True)
class Setting:
    """One setting: ``name`` is the keyword of ``batchlab.train`` and the key of a config file;
    the command line writes it ``--name-with-dashes``."""

    name: str
    default: Any
    help: str
    read_value: Callable[[Any], Any]  # a given value (not None) -> the value batchlab uses
    example: Any  # a valid value other than the default (help text and tests)
    unit: str = ""
    axis: bool = False  # a list of values is a grid axis: one run per value
    flag: bool = False  # true/false: --name / --no-name on the command line
    short: str | None = None  # a one-letter option ("-b")
    aliases: tuple[str, ...] = ()  # other names accepted for it (older option and key names)
    group: str = "training"

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def read(self, value: Any) -> Any:
        """The value as batchlab uses it (a list for an axis); ``None`` means "not given": the
        default. One-line BatchlabError otherwise."""
        if value is None:
            return None if self.default is None else self.read_value(self.default)
        return self.read_value(value)

    def describe(self, default: Any = None) -> str:
        """Help text: what it is, its unit, an example and the default."""
        default = self.default if default is None else default
        text = self.help + (f" ({self.unit})" if self.unit else "")
        if self.axis:
            text += f"; a list gives one run per value (e.g. {self.example})"
        return f"{text}; default: {as_text(default).replace('True', 'yes').replace('False', 'no')}"


def as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


# ---------------------------------------------------------------- how values are read

def _data(value: Any) -> Any:
    """A built-in name or a file path (text); from Python also arrays or a ``Dataset``
    (checked when the data is loaded: ``api.resolve_data``)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and not value.strip():
        raise BatchlabError("data must be a built-in name or a file, got ''")
    return value


def _model(value: Any) -> Any:
    """A built-in name or ``file.py:function``; from Python also a model object."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and not value.strip():
        raise BatchlabError("model must be a built-in name or file.py:function, got ''")
    return value


def _instruments(value: Any) -> tuple[str, ...]:
    from batchlab.instruments import resolve_instruments

    return resolve_instruments(value)


def _instrument_help() -> str:
    from batchlab.instruments import PRESETS, STEP_INSTRUMENTS

    return (f"per-step measurements: a preset ({', '.join(p for p in PRESETS if p != 'none')}) or names "
            f"({', '.join(STEP_INSTRUMENTS)}); name@K measures every K-th update only")


def _data_help() -> str:
    from batchlab.data.builtin import BUILTIN

    return f"built-in data ({', '.join(BUILTIN)}) or a .npz/.csv file"


def _model_help() -> str:
    from batchlab.models.catalog import MODELS

    return (f"a built-in model ({', '.join(MODELS)}) or your own as file.py:function or package.module:function "
            f"returning a Flax, Equinox, Keras 3 or PyTorch model or a batchlab.Model")


# ---------------------------------------------------------------- the declaration

def _declare() -> tuple[Setting, ...]:
    # One table, one entry per setting, in the order of --help: longer than 40 lines because
    # splitting it would scatter the declaration it exists to keep in one place.
    S = Setting
    return (
        # data
        S("data", "blobs", _data_help(), _data, "digits", group="data"),
        S("standardize", None, "standardize features to mean 0, sd 1 (none: as the data set says)",
          boolean("standardize"), True, flag=True, group="data"),
        S("test_fraction", 0.2, "test split when the data has none", number_of("test fraction", low=0.0, high=1.0),
          0.3, group="data"),
        S("label", "label", "label column of a CSV file", text_value("label"), "target", group="data"),
        S("task", None, f"{' or '.join(TASKS)} (float targets, mean squared error, R^2 instead of accuracy); "
          "none: the data's own", choice_of("task", TASKS), "regression", group="data"),
        # model
        S("model", "mlp", _model_help(), _model, "logreg", group="model"),
        S("hidden", (50,), "MLP hidden widths", parse_widths, "256,256", group="model"),
        S("activation", "relu", "hidden activation: relu, tanh, sigmoid, gelu, elu, leaky_relu or linear",
          text_value("activation"), "tanh", group="model"),
        S("init", "he_uniform", "hidden-layer init: he_uniform, glorot_uniform, he_normal, glorot_normal or zeros",
          text_value("init"), "glorot_uniform", group="model"),
        S("dropout", 0.0, "dropout rate after hidden layers", number_of("dropout rate", low=0.0, high=1.0), 0.2,
          group="model"),
        S("norm", "none", "mlp and cnn: none, batch (batch norm before each hidden activation) or ghost "
          "(batch norm over virtual batches of --ghost-size rows)", choice_of("norm", NORMS), "batch", group="model"),
        S("ghost_size", None, "rows per ghost batch (--norm ghost); at least B is plain batch norm",
          integer_at_least("ghost batch size", 2), 16, unit="samples", group="model"),
        # batches and epochs
        S("batch_size", 32, "B in [1, N], 'full' (B = N), lists 1,32,full and ranges 1:1024 (powers of two)",
          parse_batch_sizes, "1,32,full", unit="samples per update", axis=True, short="-b",
          aliases=("batch_sizes",), group="batches"),
        S("epochs", 10, "passes over the training set", integer_at_least("epochs", 1), 30, short="-e", group="batches"),
        S("seeds", 1, "number of seeds (5 -> seeds 0..4) or a list 3,7", parse_seeds, "3,7", axis=True, group="batches"),
        S("reduction", "mean", "loss over the batch: mean (Keras, PyTorch) or sum",
          choice_of("loss reduction", REDUCTIONS), "sum", group="batches"),
        S("drop_last", False, "drop the last partial batch of each epoch (MATLAB)", boolean("drop last"), True,
          flag=True, group="batches"),
        S("shuffle", "every-epoch", "data order: every-epoch, once or never", choice_of("shuffle mode", SHUFFLE_MODES),
          "once", group="batches"),
        S("micro_batch", None, "largest forward pass; larger batches accumulate gradients (same update)",
          integer_at_least("micro-batch size", 1), 16, unit="samples", group="batches"),
        S("devices", 1, "devices each batch is split over, data parallel (JAX models): a count or all; "
          "B must be a multiple of it", device_count_value, "all", group="batches"),
        S("phases", (), "changes during a run: 10:B=64 (batch size after epoch 10), 20:lr=0.001, comma-separated",
          parse_phases, "10:B=64", group="batches"),
        # optimizer
        S("optimizer", "sgd", "sgd, adam or adamw (decoupled weight decay)", choices_of("optimizer", OPTIMIZERS),
          "sgd,adamw", axis=True, group="optimizer"),
        S("lr", 0.01, "learning rate", numbers_of("learning rate", positive=True), "0.001,0.01", axis=True,
          group="optimizer"),
        S("momentum", 0.0, "SGD momentum in [0, 1)", numbers_of("momentum", low=0.0, high=1.0), "0,0.9", axis=True,
          group="optimizer"),
        S("nesterov", False, "Nesterov momentum (SGD)", boolean("nesterov"), True, flag=True, group="optimizer"),
        S("weight_decay", None, "L2 penalty added to the gradient (sgd, adam) or decoupled decay (adamw); none: "
          "0, or 0.01 for adamw (PyTorch's defaults)", numbers_of("weight decay", low=0.0), "0,0.0005", axis=True,
          group="optimizer"),
        S("beta1", 0.9, "Adam's and AdamW's first-moment decay", number_of("beta1", low=0.0, high=1.0), 0.95,
          group="optimizer"),
        S("beta2", 0.999, "Adam's and AdamW's second-moment decay", number_of("beta2", low=0.0, high=1.0), 0.98,
          group="optimizer"),
        S("eps", 1e-7, "Adam's and AdamW's epsilon (Keras' default; PyTorch's is 1e-8)",
          number_of("eps", positive=True), 1e-8, group="optimizer"),
        S("clip_norm", None, "clip the gradient's global L2 norm to this before each update",
          number_of("clip norm", positive=True), 1.0, group="optimizer"),
        # learning-rate schedule
        S("schedule", "constant", "lr decay: constant, step (x decay after each of decay_epochs), cosine or "
          "linear (to decay x lr at the end)", choice_of("lr schedule", SCHEDULES), "cosine", group="schedule"),
        S("decay_epochs", (), "epochs after which a step schedule multiplies lr by decay", epoch_list, "20,40",
          unit="epochs", group="schedule"),
        S("decay", None, "lr decay factor in [0, 1]; none: 0.1 for step, 0 for cosine and linear",
          number_of("lr decay factor", low=0.0, high=1.0, closed=True), 0.5, group="schedule"),
        S("warmup_epochs", 0.0, "linear lr warmup over the first epochs", number_of("warmup epochs", low=0.0), 2.0,
          unit="epochs", group="schedule"),
        # seeds of each source of randomness (default: the run's seed)
        S("init_seed", None, "fix the initialization seed across runs", seed_value("init seed"), 7, group="seeds"),
        S("data_seed", None, "fix the data-order seed across runs", seed_value("data seed"), 7, group="seeds"),
        S("dropout_seed", None, "fix the dropout seed across runs", seed_value("dropout seed"), 7, group="seeds"),
        # early stopping
        S("patience", None, "stop after this many epochs without improvement of monitor (none: no early stopping)",
          integer_at_least("patience", 1), 5, unit="epochs", group="early stopping"),
        S("monitor", "test_loss", "metric early stopping watches", text_value("monitor"), "test_acc",
          group="early stopping"),
        S("min_delta", 0.0, "smallest change that counts as an improvement", number_of("min delta", low=0.0), 0.001,
          group="early stopping"),
        S("restore_best", True, "early stopping keeps the best epoch's parameters", boolean("restore best"), False,
          flag=True, group="early stopping"),
        # measurements
        S("instruments", (), _instrument_help(), _instruments, "standard", group="instruments"),
    )


def _declare_sweep() -> tuple[Setting, ...]:
    S = Setting
    return (
        S("name", None, "the sweep's name in the store; none: sweep-<digest of its settings>, so the same "
          "settings resume the same sweep and other settings make another", text_value("sweep name"), "lr-grid",
          group="sweep"),
        S("budget", "epochs=30", "what each batch size trains: epochs=N, steps=N or samples=N", _budget,
          "samples=1e6", group="sweep"),
        S("target", "test_acc>=0.95", "what counts as reached, e.g. test_acc>=0.95 or test_loss<=0.2", _target,
          "test_loss<=0.2", group="sweep"),
        S("lr_scaling", None, "one lr per B instead of --lr: linear or sqrt in B/base_batch",
          choice_of("lr scaling", SCALING_RULES), "sqrt", group="sweep"),
        S("base_lr", 0.01, "lr at the base batch size, for lr_scaling", number_of("base lr", positive=True), 0.1,
          group="sweep"),
        S("base_batch", 32, "base batch size, for lr_scaling", integer_at_least("base batch size", 1), 128,
          unit="samples", group="sweep"),
    )


def _budget(value: Any) -> str:
    parse_budget(value)
    return str(value).strip()


def _target(value: Any) -> str:
    parse_target(str(value))
    return str(value).strip()


TRAINING: tuple[Setting, ...] = _declare()
SWEEP: tuple[Setting, ...] = _declare_sweep()
BY_NAME: dict[str, Setting] = {s.name: s for s in TRAINING + SWEEP}
ALIASES: dict[str, str] = {alias: s.name for s in TRAINING + SWEEP for alias in s.aliases}
# A sweep studies many batch sizes on a data set where they differ: its own defaults.
SWEEP_DEFAULTS = {"data": "digits", "batch_size": "1:1024,full", "seeds": 3}


def read_settings(given: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The given settings (by name or alias; ``None`` = not given) read by their declaration;
    an unknown name is refused with the known ones. ``where`` prefixes messages (a config file)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        name = ALIASES.get(key, key)
        if name not in BY_NAME:
            raise BatchlabError(f"{where}unknown setting {key!r}; known: {', '.join(BY_NAME)}")
        if value is None:
            continue  # not given
        if name in out:
            raise BatchlabError(f"{where}{name} is given twice (as {key!r} too)")
        try:
            out[name] = BY_NAME[name].read(value)
        except BatchlabError as exc:
            raise BatchlabError(f"{where}{exc}") from None
    return out


def read_given(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings given to the Python API, read by their declaration; an ``EarlyStopping`` object
    (``early_stopping=``) stands for its four settings."""
    settings = dict(settings)
    rule = settings.pop("early_stopping", None)
    if rule is not None:
        if not isinstance(rule, EarlyStopping):
            raise BatchlabError(f"early_stopping must be a batchlab.EarlyStopping, got {type(rule).__name__}")
        for name in ("patience", "monitor", "min_delta", "restore_best"):
            if settings.get(name) is not None:
                raise BatchlabError(f"give early_stopping or {name}, not both")
            settings[name] = getattr(rule, name)
    return read_settings(settings)


def training_defaults(sweep: bool = False) -> dict[str, Any]:
    """Every training setting at its default (a sweep's own defaults with ``sweep``), read."""
    values = {s.name: s.read(s.default) for s in TRAINING}
    if sweep:
        values.update(read_settings(SWEEP_DEFAULTS))
    return values


__all__ = ["Setting", "TRAINING", "SWEEP", "BY_NAME", "SWEEP_DEFAULTS", "read_settings", "read_given",
           "training_defaults",
           "DEFAULT_WEIGHT_DECAY"]

