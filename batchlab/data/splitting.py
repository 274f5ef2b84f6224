"""Train/test split of data that brings no test set: scikit-learn's ``train_test_split`` with a
seed, computed with NumPy alone.

batchlab's splits were defined as ``train_test_split(x, y, test_size=f, random_state=seed,
stratify=y or None)``; importing scikit-learn for it took about a second of every command on
a user's CSV file (and of the first command on a built-in set). This module draws the same
rows in the same order from the same ``RandomState(seed)`` stream, as scikit-learn 1.x does
(``ShuffleSplit``, ``StratifiedShuffleSplit`` and ``_approximate_mode``); the tests compare
both on many shapes, fractions and seeds, so a change in scikit-learn shows up there.
"""

from __future__ import annotations

import math

import numpy as np


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """Train and test rows: ``ceil(fraction x n)`` test rows, the rest train."""
    n_test = math.ceil(test_fraction * n)
    return n - n_test, n_test


def train_test_rows(y: np.ndarray, test_fraction: float, seed: int, stratified: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and the test part, each in its drawn order.

    Not stratified: one permutation of the rows, the first ``n_test`` are the test part.
    Stratified: each class contributes (about) its share of both parts (the share rounded
    down, the rows left over given to the classes with the largest remainders, ties drawn at
    random), its rows drawn by a permutation per class; both parts are shuffled at the end.
    """
    n = len(y)
    n_train, n_test = split_sizes(n, test_fraction)
    rng = np.random.RandomState(seed)
    if not stratified:
        order = rng.permutation(n)
        return order[n_test:n_test + n_train], order[:n_test]
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    rows_of_class = np.split(np.argsort(codes, kind="stable"), np.cumsum(counts)[:-1])
    train_per_class = _largest_remainders(counts, n_train, rng)
    test_per_class = _largest_remainders(counts - train_per_class, n_test, rng)
    train, test = [], []
    for rows, n_tr, n_te in zip(rows_of_class, train_per_class, test_per_class):
        drawn = rows.take(rng.permutation(len(rows)), mode="clip")
        train.extend(drawn[:n_tr])
        test.extend(drawn[n_tr:n_tr + n_te])
    return rng.permutation(train), rng.permutation(test)


def _largest_remainders(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """``draws`` rows shared among classes in proportion to ``counts``: each class gets its
    share rounded down, then the rows left go one each to the classes with the largest
    remainders (equal remainders: drawn at random)."""
    share = counts / counts.sum() * draws
    taken = np.floor(share)
    left = int(draws - taken.sum())
    if left > 0:
        remainder = share - taken
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            now = min(len(tied), left)
            taken[rng.choice(tied, size=now, replace=False)] += 1
            left -= now
            if left == 0:
                break
    return taken.astype(int)
