"""Bring your own model: ``adapt`` turns a model from another framework into the engine's
``init``/``apply`` pair (:class:`batchlab.models.Model`).

Accepted: a ``batchlab.Model``; a Flax linen Module; a Flax NNX Module; an Equinox Module
(or an ``eqx.nn.make_with_state`` pair); a Keras 3 model (JAX backend); a PyTorch
``torch.nn.Module`` (trained by the engine's torch backend); or a function (or class) that
returns one of these — a *factory*, called with what its signature asks for: ``input_shape``
(one sample's shape), ``num_classes`` (or ``num_outputs``), ``key`` (a JAX key) and ``rngs``
(``nnx.Rngs``), unnamed required parameters getting the input shape then the number of classes.

Re-initialization per init seed (see each adapter's docstring): linen Modules and factories
are initialized afresh for every seed; an already-built NNX, Equinox or Keras object keeps its
own weights for every seed (with a warning) — pass a factory to vary them.

The framework is told from the names of the object's classes (``type(obj).__mro__``), so no
framework is imported that the object does not come from; each adapter lives behind an
optional extra (``pip install 'batchlab[flax]'``, ``[equinox]``, ``[keras]``).
"""

from __future__ import annotations

import importlib
from typing import Any

from batchlab.errors import BatchlabError
from batchlab.models.adapters.common import call_factory, check_outputs, takes
from batchlab.models.base import Model

# framework -> (module prefixes of its model classes, the package to import, the install hint)
FRAMEWORKS = {
    "linen": (("flax.linen",), "flax", "pip install 'batchlab[flax]'"),
    "nnx": (("flax.nnx",), "flax", "pip install 'batchlab[flax]'"),
    "equinox": (("equinox",), "equinox", "pip install 'batchlab[equinox]'"),
    "keras": (("keras",), "keras", "pip install 'batchlab[keras]'"),  # Keras 3 (the version is checked)
    "keras2": (("tf_keras", "tensorflow.python.keras"), "keras", "pip install 'batchlab[keras]'"),
    "torch": (("torch.nn",), "torch", "pip install torch"),
}
MODEL_KINDS = ("a built-in name, a batchlab.Model, a Flax (linen or NNX), Equinox, Keras 3 or PyTorch model, "
               "or a function returning one")


def framework_of(obj: Any) -> str | None:
    """``"batchlab"``, ``"linen"``, ``"nnx"``, ``"equinox"``, ``"keras"``, ``"keras2"``,
    ``"torch"``, or None (not a model), from the modules of ``type(obj)``'s classes."""
    if isinstance(obj, Model):
        return "batchlab"
    if isinstance(obj, tuple) and len(obj) == 2 and framework_of(obj[0]) == "equinox":
        return "equinox"  # an eqx.nn.make_with_state pair
    if isinstance(obj, type):
        return None  # a class is a factory
    for cls in type(obj).__mro__:
        module = getattr(cls, "__module__", "") or ""
        for kind, (prefixes, _, _) in FRAMEWORKS.items():
            if any(module == p or module.startswith(p + ".") for p in prefixes):
                return kind
    return None


def require(kind: str) -> None:
    """Import the framework ``kind`` needs, or raise the one-line install hint."""
    _, package, hint = FRAMEWORKS[kind]
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise BatchlabError(f"this model needs {package}, which is not installed ({exc.name or package}): "
                            f"{hint}") from None


def adapt(obj: Any, sample_shape: tuple[int, ...], num_outputs: int, task: str = "classification", *,
          label: str | None = None) -> Model:
    """The engine's ``init``/``apply`` pair for ``obj`` (see the module docstring for what it takes).

    ``sample_shape`` is one sample's shape (no batch axis), ``num_outputs`` the number of
    classes (or regression outputs), ``task`` ``"classification"`` or ``"regression"``;
    ``label`` names the model in error messages (default: its type or function name).
    """
    sample_shape = tuple(int(d) for d in sample_shape)
    label = label or describe(obj)
    kind, factory, template = framework_of(obj), None, obj
    if kind is None:
        if not callable(obj):
            raise BatchlabError(f"{label} is not a model: give {MODEL_KINDS}")
        factory, template = obj, _probe(obj, sample_shape, num_outputs, label)
        kind = framework_of(template)
        if kind is None:
            raise BatchlabError(f"{label} returned {type(template).__name__}, not a model: it must return "
                                f"a Flax, Equinox, Keras 3 or PyTorch model or a batchlab.Model")
    if kind == "batchlab":
        return template
    if kind == "keras2":
        raise BatchlabError(f"{label} is a Keras 2 (tf.keras) model; batchlab takes Keras 3 models on the JAX "
                            f"backend: {FRAMEWORKS['keras'][2]}")
    require(kind)
    name = f"{kind}:{describe(obj)}"
    if kind == "torch":
        return _torch(factory or obj, sample_shape, num_outputs, task, name)
    if kind == "linen":
        from batchlab.models.adapters.flax import adapt_linen

        return adapt_linen(template, sample_shape, num_outputs, task, name=name)
    if kind == "nnx":
        from batchlab.models.adapters.flax import adapt_nnx

        return adapt_nnx(template, sample_shape, num_outputs, task, factory=factory, label=label, name=name)
    if kind == "equinox":
        from batchlab.models.adapters.equinox import adapt_equinox

        return adapt_equinox(template, sample_shape, num_outputs, task, factory=factory, label=label, name=name)
    from batchlab.models.adapters.keras import adapt_keras

    return adapt_keras(template, sample_shape, num_outputs, task, factory=factory, label=label, name=name)


def _probe(factory, sample_shape: tuple[int, ...], num_outputs: int, label: str) -> Any:
    """Call a factory once (seed 0) to see which framework its model comes from."""
    extra: dict[str, Any] = {}
    if takes(factory, "key") or takes(factory, "rngs"):
        import jax

        extra["key"] = jax.random.PRNGKey(0)
    if takes(factory, "rngs"):
        require("nnx")
        from flax import nnx

        extra["rngs"] = nnx.Rngs(extra["key"])
    return call_factory(factory, sample_shape, num_outputs, label, **extra)


def _torch(obj_or_factory, sample_shape: tuple[int, ...], num_outputs: int, task: str, name: str):
    """PyTorch models run on the engine's torch backend (``batchlab.models.adapters.torch``)."""
    try:
        from batchlab.models.adapters.torch import adapt_torch
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("batchlab"):
            raise BatchlabError("this batchlab has no torch backend for PyTorch models") from None
        raise BatchlabError(f"PyTorch models need {exc.name}: {FRAMEWORKS['torch'][2]}") from None
    return adapt_torch(obj_or_factory, sample_shape, num_outputs, task, name=name)


def describe(obj: Any) -> str:
    """A short name for a model object or factory: its function or class name."""
    if isinstance(obj, Model):
        return obj.name
    if isinstance(obj, tuple) and obj:
        return describe(obj[0])
    name = getattr(obj, "__qualname__", None) if callable(obj) and not framework_of(obj) else None
    return name or type(obj).__name__


__all__ = ["adapt", "framework_of", "check_outputs", "describe", "require", "FRAMEWORKS"]
