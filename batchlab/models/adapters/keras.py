"""Keras 3 models (JAX backend) as the engine's ``init``/``apply`` pair, through ``stateless_call``.

**Parameters** are ``model.trainable_variables`` (a list, in Keras' order); the **state** is
the other ``non_trainable_variables`` (batch-norm moving mean and variance), except the seed
generators' states, which are not carried: in a training call each seed generator gets raw
threefry words made from the engine's dropout key (``fold_in(key, i)`` for the i-th), so
every step draws new dropout masks from the run's dropout seed. Keras draws one mask over the
whole batch from those words, so unlike Flax and Equinox its masks are not split-invariant
(micro-batches and the two-half noise instruments see other masks than the whole batch).

**Train / eval**: ``stateless_call(..., training=train)``, as ``model.fit`` and
``model.predict`` call it. Losses that layers add (``kernel_regularizer``) are not part of
batchlab's loss.

**Re-initialization per seed**: give a function that builds the model (``make_model()``,
optionally taking ``input_shape``/``num_classes``). Init seed s builds it as
``keras.utils.set_random_seed(s); make_model()`` — the weights a plain Keras script gets with
that seed (seeds of 2**32 and above are hashed to 32 bits). Keras builds variables eagerly,
so this runs on the host (a ``jax.pure_callback`` from the compiled init, on the CPU), and
Python's and NumPy's global random states are restored afterwards. An already-built model
keeps *its own* initial weights for every seed (a warning says so).

Keras must run on its JAX backend: set ``KERAS_BACKEND=jax`` before Keras is imported
(batchlab sets it when it imports a model file and Keras is not imported yet).
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from batchlab.errors import BatchlabError
from batchlab.models.adapters.common import call_factory, raw_key
from batchlab.models.base import Model


def check_backend() -> None:
    """One line when Keras is not Keras 3 on its JAX backend."""
    import keras

    if int(keras.__version__.split(".")[0]) < 3:
        raise BatchlabError(f"Keras {keras.__version__} is not Keras 3: pip install 'batchlab[keras]'")
    backend = keras.backend.backend()
    if backend != "jax":
        raise BatchlabError(f"Keras runs on its {backend!r} backend here; batchlab needs KERAS_BACKEND=jax, "
                            f"set before Keras is first imported")


def adapt_keras(model: Any, sample_shape: tuple[int, ...], num_outputs: int, task: str = "classification", *,
                factory: Callable | None = None, label: str = "the Keras model", name: str = "keras") -> Model:
    """A Keras 3 model as an init/apply pair; ``factory`` re-builds it per init seed."""
    check_backend()
    if factory is None:
        warnings.warn(f"{label} is an already-built Keras model: every run starts from its own weights, whatever "
                      f"the init seed; pass a function that builds it to re-initialize per seed", stacklevel=3)
    _build(model, sample_shape)
    layout = _Layout(model)
    values0 = [np.asarray(v.value) for v in layout.trainable + layout.state]
    shapes = tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in values0)

    def host_init(key_words) -> tuple[np.ndarray, ...]:
        built = _seeded(lambda: call_factory(factory, sample_shape, num_outputs, label), _seed_of(key_words))
        _build(built, sample_shape)
        fresh = _Layout(built)
        values = tuple(np.asarray(v.value) for v in fresh.trainable + fresh.state)
        if [(v.shape, v.dtype) for v in values] != [(s.shape, s.dtype) for s in shapes]:
            raise BatchlabError(f"{label} built with another seed has other variables; it must build the same "
                                f"architecture every time")
        return values

    def init(key: jax.Array):
        if factory is None:
            values = [jnp.asarray(v) for v in values0]
        else:
            words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
            values = jax.pure_callback(host_init, shapes, jnp.asarray(words, jnp.uint32), vmap_method="sequential")
        split = len(layout.trainable)
        return list(values[:split]), list(values[split:])

    def apply(params, state, x, *, train: bool = False, key: jax.Array | None = None):
        variables = layout.non_trainable_values(state, key if train else None)
        out, new = model.stateless_call(list(params), variables, x, training=train)
        return out, (layout.state_of(new) if train else state)

    return Model(init, apply, name, task=task)


class _Layout:
    """Which of a model's non-trainable variables are state and which are seed-generator states."""

    def __init__(self, model: Any):
        self.trainable = list(model.trainable_variables)
        self.non_trainable = list(model.non_trainable_variables)
        seeds = {id(v) for v in _seed_states(model)}
        self.seed_positions = [i for i, v in enumerate(self.non_trainable) if id(v) in seeds]
        self.state_positions = [i for i in range(len(self.non_trainable)) if i not in self.seed_positions]
        self.state = [self.non_trainable[i] for i in self.state_positions]
        self.seed_values = [np.asarray(self.non_trainable[i].value) for i in self.seed_positions]

    def non_trainable_values(self, state: list, key: jax.Array | None) -> list:
        values: list = [None] * len(self.non_trainable)
        for i, value in zip(self.state_positions, state):
            values[i] = value
        for j, i in enumerate(self.seed_positions):
            values[i] = self.seed_values[j] if key is None else raw_key(key, j)
        return values

    def state_of(self, values: list) -> list:
        return [values[i] for i in self.state_positions]


def _seed_states(model: Any) -> list:
    """The state variables of the seed generators in the model's layers (``keras.random.SeedGenerator``
    names its one variable ``seed_generator_state``: two raw threefry words)."""
    return [v for v in model.non_trainable_variables
            if v.name == "seed_generator_state" and tuple(v.shape) == (2,) and "int" in str(v.dtype)]


def _build(model: Any, sample_shape: tuple[int, ...]) -> None:
    """Create the model's variables (one call on a zero batch) if it has none yet."""
    if not model.built or not model.variables:
        model(np.zeros((1, *sample_shape), np.float32), training=False)


def _seed_of(key_words) -> int:
    """The integer seed of a ``jax.random.PRNGKey(seed)`` key (hashed to 32 bits above 2**32 - 1)."""
    high, low = (int(w) for w in np.asarray(key_words, np.uint64))
    seed = (high << 32) | low
    return seed if seed < 2 ** 32 else int(np.random.SeedSequence(seed).generate_state(1)[0])


def _seeded(build: Callable[[], Any], seed: int) -> Any:
    """``build()`` after ``keras.utils.set_random_seed(seed)``, on the CPU, leaving Python's and
    NumPy's global random states as they were."""
    import keras

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(seed)
        with jax.default_device(jax.devices("cpu")[0]):
            return build()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


__all__ = ["adapt_keras", "check_backend"]
