"""The NumPy train/test split (``data/splitting.py``) and the blobs and digits readers give
exactly what scikit-learn gave before: same rows, same order, same values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from batchlab.data import builtin
from batchlab.data.dataset import split
from batchlab.data.splitting import train_test_rows


def _labels(counts, seed=0):
    """Labels with ``counts[k]`` rows of class k, in a shuffled order."""
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


def _sklearn_rows(y, fraction, seed, stratified):
    rows = np.arange(len(y))
    train, test = train_test_split(rows, test_size=fraction, random_state=seed, stratify=y if stratified else None)
    return train, test


CASES = [
    ([50, 50, 50], 0.2, 0), ([50, 50, 50], 0.33, 7),          # equal classes: remainders tie
    ([40, 7, 3, 100], 0.25, 1), ([2, 2, 2, 2, 2], 0.5, 3),    # imbalanced; smallest possible classes
    ([178, 179, 180, 181, 182, 183], 0.2, 123),               # digits-like
    ([500, 500], 0.1, 2), ([13, 29, 31, 8], 0.37, 42), ([3, 3, 3], 0.4, 5),
]


@pytest.mark.parametrize("counts, fraction, seed", CASES)
@pytest.mark.parametrize("stratified", [True, False])
def test_rows_are_scikit_learns_train_test_split(counts, fraction, seed, stratified):
    y = _labels(counts, seed)
    ours = train_test_rows(y, fraction, seed, stratified)
    theirs = _sklearn_rows(y, fraction, seed, stratified)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert len(ours[0]) + len(ours[1]) == len(y) and not set(ours[0]) & set(ours[1])


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(2, 40), min_size=2, max_size=8), fraction=st.floats(0.05, 0.6),
       seed=st.integers(0, 2 ** 31 - 1), order_seed=st.integers(0, 100))
def test_stratified_rows_match_on_random_class_counts(counts, fraction, seed, order_seed):
    y = _labels(counts, order_seed)
    n_test = int(np.ceil(fraction * len(y)))
    if len(counts) > fraction * len(y) or len(counts) > len(y) - n_test:
        return  # batchlab does not stratify these (scikit-learn refuses them)
    for a, b in zip(train_test_rows(y, fraction, seed, True), _sklearn_rows(y, fraction, seed, True)):
        np.testing.assert_array_equal(a, b)


def test_split_keeps_the_rule_of_when_to_stratify():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = _labels([2] * 10)  # 10 classes in 20 rows: a test part of 4 rows cannot hold each class
    x_train, x_test, y_train, y_test = split("tiny", x, y, 0.2, 3)
    expected = train_test_split(x, y, test_size=0.2, random_state=3, stratify=None)
    for a, b in zip((x_train, x_test, y_train, y_test), expected):
        np.testing.assert_array_equal(a, b)


def test_digits_are_read_as_scikit_learn_loads_them():
    x, y = builtin._digits()
    bunch = load_digits()
    np.testing.assert_array_equal(x, (bunch.data / 16.0).reshape(-1, 8, 8, 1))
    np.testing.assert_array_equal(y, bunch.target)
    assert x.dtype == np.float64 and y.dtype == bunch.target.dtype


def test_blobs_are_scikit_learns_make_blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=2)
    ours = builtin._blobs()
    for got, expected in zip(ours, (x[:500], y[:500], x[500:], y[500:])):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype


def test_a_split_that_leaves_no_training_rows_is_refused_in_one_line():
    from batchlab.errors import BatchlabError

    with pytest.raises(BatchlabError, match="leaves no training rows of 4"):
        split("tiny", np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1]), 0.9, 0)
