"""From what a user gives as ``model`` to a :class:`ModelConfig` (the run's identity) and the
engine's :class:`Model`: a built-in name, an import path (``file.py:make_model``), or a model
object (``batchlab.Model``, Flax, Equinox, Keras, PyTorch, or a factory of one).

A model given as code is identified by its fingerprint (architecture, initial parameters and
outputs; ``models.fingerprint``, or the torch backend's own), never by its name alone. Before
anything trains it must give one row of ``num_outputs`` finite values per sample
(``adapters.check_outputs``). Sweep workers rebuild an import-path model from the run's config
(:func:`model_for_config`) and refuse it if its fingerprint changed since the runs were planned.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchlab.config import ModelConfig

from batchlab.parsing import parse_widths
from batchlab.errors import BatchlabError
from batchlab.models import Model, build_model, fingerprint
from batchlab.models import imported


def task_of(dataset) -> str:
    """``"classification"`` or ``"regression"``: what the data's targets are."""
    return getattr(dataset, "task", "classification")


def outputs_of(dataset) -> int:
    """How many outputs a model needs for this data (classes, or regression targets)."""
    return int(getattr(dataset, "num_outputs", dataset.num_classes))


# The built-in models' options: every ModelConfig field but its name and a coded model's fingerprint
# (a setting of the same name in settings.py fills each).
MODEL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("name", "fingerprint"))


def model_options(values: dict) -> dict:
    """The built-in models' options among a run's setting values (``resolve_model``'s keywords)."""
    return {name: values[name] for name in MODEL_OPTIONS}


def resolve_model(model: Any, dataset, **options: Any) -> tuple[ModelConfig, Model]:
    """The run identity and the engine's model for ``model`` on ``dataset``; ``options``
    (:data:`MODEL_OPTIONS`, the defaults where not given) apply to built-in models only (a model
    given as code brings its own; a norm asked of one is refused rather than ignored)."""
    if isinstance(model, str) and not imported.is_import_path(model):
        cfg = ModelConfig(model, **options)
        cfg = dataclasses.replace(cfg, hidden=parse_widths(cfg.hidden), dropout=float(cfg.dropout))
        return cfg, build_model(cfg, dataset.sample_shape, dataset.num_classes, task_of(dataset))
    if options.get("norm", "none") != "none":
        raise BatchlabError(f"--norm {options['norm']} applies to the built-in mlp and cnn; a model given as code "
                            "brings its own normalisation layers")
    from batchlab.models.adapters import describe

    if isinstance(model, (str, Path)):
        name = imported.canonical(model)
        obj, label = imported.load(name)
    else:  # a batchlab.Model keeps its name as before ("custom:NAME"); others get "custom:FRAMEWORK:NAME"
        obj, label = model, f"model {describe(model)}"
        name = None
    net = adapt_checked(obj, dataset, label)
    with user_code(label, dataset):
        identity = model_fingerprint(net, dataset)
    name = name or f"custom:{getattr(net, 'name', None) or describe(model)}"
    return ModelConfig(name=name, hidden=(), activation="", init="", dropout=0.0, fingerprint=identity), net


def adapt_checked(obj: Any, dataset, label: str) -> Model:
    """``adapters.adapt`` for this data, then one evaluation-mode forward pass on 2 training rows
    that checks the outputs (a torch-backed model is checked through its ``outputs_at_init``)."""
    from batchlab.models.adapters import adapt
    from batchlab.models.adapters.common import check_output_values, check_outputs

    from batchlab.runtime import configure_cache

    # Frameworks initialize eagerly here (one compiled op per random draw: seconds on a CPU);
    # with the on-disk cache set up first, the next process (a CLI run, a sweep worker) loads them.
    configure_cache()
    task, outputs = task_of(dataset), outputs_of(dataset)
    with user_code(label, dataset):
        net = adapt(obj, dataset.sample_shape, outputs, task, label=label)
        if getattr(net, "backend", "jax") == "jax":
            check_outputs(net, dataset.x_train, outputs, task, label)
        elif hasattr(net, "outputs_at_init"):  # eval-mode outputs at the seed-0 init, as numpy
            rows = dataset.x_train[:2]
            check_output_values(net.outputs_at_init(rows), len(rows), outputs, task, label)
    return net


@contextmanager
def user_code(label: str, dataset):
    """Run the user's model code: what it raises on this data (a shape, a dtype, ...), or a
    ``sys.exit`` in it, becomes one line (a real Ctrl-C stays Ctrl-C)."""
    try:
        yield
    except BatchlabError:
        raise
    except (Exception, SystemExit) as exc:
        from batchlab.models.adapters.common import one_line

        what = f"exited (sys.exit({exc.code!r}))" if isinstance(exc, SystemExit) else \
            f"fails on this data (samples of shape {dataset.sample_shape}, {outputs_of(dataset)} outputs): " \
            f"{type(exc).__name__}: {one_line(exc)}"
        raise BatchlabError(f"{label} {what}") from None


def model_fingerprint(net: Any, dataset) -> str:
    """The model's identity: the torch backend's ``fingerprint(dataset)`` when it has one,
    else ``models.fingerprint`` (parameters at seed 0 and outputs on the first rows)."""
    own = getattr(net, "fingerprint", None)
    if callable(own):
        return own(dataset)
    return fingerprint(net, dataset)


def is_code_model(cfg: ModelConfig) -> bool:
    """Whether a config names a model given as code (an object or an import path)."""
    return cfg.name.startswith(("custom:", imported.PREFIX))


def model_for_config(cfg: ModelConfig, dataset) -> Model:
    """The model a stored config names, rebuilt (what sweep workers run): a built-in model, or
    an import path whose fingerprint must still be the planned one."""
    if cfg.name.startswith(imported.PREFIX):
        obj, label = imported.load(cfg.name)
        net = adapt_checked(obj, dataset, label)
        with user_code(label, dataset):
            identity = model_fingerprint(net, dataset)
        if cfg.fingerprint is not None and identity != cfg.fingerprint:
            raise BatchlabError(f"{label} gives another model than when these runs were planned (its fingerprint "
                                f"changed): was the file edited? Plan the runs again")
        return net
    if cfg.name.startswith("custom:"):
        raise BatchlabError(f"model {cfg.name[len('custom:'):]!r} was given as a Python object and cannot be rebuilt "
                            f"by a sweep worker: give it as file.py:function")
    return build_model(cfg, dataset.sample_shape, dataset.num_classes, task_of(dataset))


__all__ = ["resolve_model", "model_for_config", "model_fingerprint", "is_code_model", "adapt_checked"]
