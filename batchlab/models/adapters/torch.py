"""A PyTorch ``nn.Module`` as a batchlab model, trained by the torch backend of the engine.

torchax (PyTorch on JAX) does not import with the installed torch, so a PyTorch model is not
turned into the JAX ``init``/``apply`` pair: :class:`TorchModel` says ``backend = "torch"``
and ``engine/backends.py`` sends its cohorts to ``engine/torch_backend.py``, which trains the
user's module itself (``torch.func`` for cohorts of runs).

Initialization: a factory is called under a seeded torch generator; a module given as an
instance is deep-copied and every submodule that has ``reset_parameters`` re-initializes
itself under that seed (parameters outside such submodules keep the instance's values in
every run). The user's global torch RNG is never disturbed (``torch.random.fork_rng``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from batchlab.config import TASKS
from batchlab.errors import BatchlabError

FINGERPRINT_ROWS = 16  # rows of the training data whose outputs enter the fingerprint (as in models.fingerprint)


@dataclass(frozen=True, eq=False)
class TorchModel:
    """A PyTorch model for the torch backend: how to build it for an init seed, and its task.

    ``task``: "classification" (integer labels, softmax cross-entropy on the outputs) or
    "regression" (float targets; per-sample loss = mean over output dims of the squared error).
    """

    make: Callable[[], torch.nn.Module]  # a fresh, initialized module (seeding is done around it)
    name: str
    task: str
    sample_shape: tuple[int, ...]
    num_outputs: int
    backend: str = "torch"
    dense_taps: None = None  # instruments use per-sample gradients (no dense-layer factorization)

    def build(self, init_seed: int) -> torch.nn.Module:
        """The module with its initial parameters for ``init_seed`` (CPU generator forked:
        the caller's torch RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(init_seed))
            return self.make()

    def fingerprint(self, dataset) -> str:
        """SHA-256 (32 hex digits) of what identifies the model, as ``batchlab.models.fingerprint``
        does for JAX models: module class names and structure (names only, so the module a class
    was imported from does not matter), parameter and buffer names, shapes,
        dtypes and values at init seed 0, and eval-mode outputs on the first 16 training rows
        rounded to 5 significant digits (so float reassociation elsewhere keeps the identity)."""
        from batchlab.data.dataset import array_digest

        module = self.build(0)
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        structure = "\n".join([f"torch:{self.task}"]
                              + [f"{n}:{type(m).__qualname__}" for n, m in module.named_modules()]
                              + [f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in tensors])
        outputs = _eval_outputs(module, np.asarray(dataset.x_train[:FINGERPRINT_ROWS]))
        rounded = np.asarray(outputs, np.float64)
        scale = 10.0 ** (4 - np.floor(np.log10(np.maximum(np.abs(rounded), 1e-30))))
        rounded = np.round(rounded * scale) / scale
        values = [t.detach().cpu().numpy() for _, t in tensors]
        return array_digest(np.frombuffer(structure.encode(), np.uint8), *values, rounded)[:32]

    def outputs_at_init(self, rows) -> np.ndarray:
        """Eval-mode outputs on ``rows`` at init seed 0, as NumPy (the front door's output check)."""
        return _eval_outputs(self.build(0), np.asarray(rows))

    # The JAX engine's interface: a PyTorch model reaching JAX-only code says so in one line.
    def init(self, key: Any = None):
        raise BatchlabError(f"model {self.name!r} is a PyTorch model: it trains on the torch backend "
                            "(engine/backends.py) and has no JAX init")

    def apply(self, *args: Any, **kwargs: Any):
        raise BatchlabError(f"model {self.name!r} is a PyTorch model: Hessian instruments (lambda_max, Hessian "
                            "trace, sharpness) are not available for PyTorch models (noise: use --no-sharpness)")


def adapt_torch(obj_or_factory: torch.nn.Module | Callable[..., torch.nn.Module], sample_shape: tuple[int, ...],
                num_outputs: int, task: str = "classification", name: str | None = None) -> TorchModel:
    """A :class:`TorchModel` from an ``nn.Module`` or a function returning one.

    A factory may take ``input_shape`` (the shape of one sample), ``num_classes`` and/or
    ``num_outputs`` (both = ``num_outputs``), or nothing (``adapters.common.call_factory``).
    The model is built once at init seed 0 and checked on two zero samples: one row of
    ``num_outputs`` finite values per sample (one-line :class:`BatchlabError` otherwise).
    """
    if task not in TASKS:
        raise BatchlabError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    sample_shape = tuple(int(s) for s in sample_shape)
    if isinstance(obj_or_factory, torch.nn.Module):
        make = _fresh_copy(obj_or_factory)
        default_name = type(obj_or_factory).__name__
    elif callable(obj_or_factory):
        default_name = getattr(obj_or_factory, "__name__", type(obj_or_factory).__name__)
        make = _factory_call(obj_or_factory, sample_shape, num_outputs, f"model function {default_name!r}")
    else:
        raise BatchlabError(f"a PyTorch model must be an nn.Module or a function returning one, "
                            f"got {type(obj_or_factory).__name__}")
    model = TorchModel(make, name or default_name, task, sample_shape, int(num_outputs))
    _check(model)
    return model


def _fresh_copy(module: torch.nn.Module) -> Callable[[], torch.nn.Module]:
    """Deep copy, then ``reset_parameters()`` of every submodule that has one (in module order,
    so the draws follow the seed)."""
    def make() -> torch.nn.Module:
        fresh = copy.deepcopy(module)
        for sub in fresh.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
        return fresh
    return make


def _factory_call(factory: Callable[..., Any], sample_shape: tuple[int, ...], num_outputs: int, label: str):
    """The factory called with what its signature asks for (``adapters.common.call_factory``:
    ``input_shape``, ``num_classes``/``num_outputs`` and their aliases, or nothing)."""
    from batchlab.models.adapters.common import call_factory

    def make() -> torch.nn.Module:
        module = call_factory(factory, sample_shape, num_outputs, label)
        if not isinstance(module, torch.nn.Module):
            raise BatchlabError(f"{label} returned {type(module).__name__}, not a torch.nn.Module")
        return module
    return make


def _eval_outputs(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Eval-mode outputs of ``module`` on rows ``x`` (the module's mode is restored)."""
    first = next(iter(module.parameters()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    device = first.device if first is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.tensor(np.asarray(x), dtype=dtype, device=device))
    finally:
        module.train(was_training)
    return out.detach().cpu().numpy()


def _check(model: TorchModel) -> None:
    """One line for a model that cannot train on this data: it raises on two zero samples, or
    its outputs have the wrong width, are not finite or are probabilities
    (``adapters.common.check_output_values``, as for every framework)."""
    from batchlab.models.adapters.common import check_output_values, one_line

    label = f"PyTorch model {model.name!r}"
    rows = np.zeros((2, *model.sample_shape), np.float32)
    try:
        out = model.outputs_at_init(rows)
    except BatchlabError:
        raise
    except Exception as exc:  # the user's module: any error is reported in one line
        raise BatchlabError(f"{label} fails on samples of shape {model.sample_shape}: "
                            f"{type(exc).__name__}: {one_line(exc)}") from None
    check_output_values(out, len(rows), model.num_outputs, model.task, label)
