"""Built-in datasets that need no network: scikit-learn generators and bundled sets.

``blobs`` is exactly Brownlee's problem: ``make_blobs(1000, centers=3, n_features=2,
cluster_std=2, random_state=2)``, rows 0-499 train and 500-999 test, no scaling.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# name -> (loader returning (x, y) or (x_train, y_train, x_test, y_test), standardize by default)
Loader = Callable[[], tuple]


def _blobs():
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=2)
    return x[:500], y[:500], x[500:], y[500:]


def _moons():
    from sklearn.datasets import make_moons

    return make_moons(n_samples=1000, noise=0.2, random_state=1)


def _classification():
    from sklearn.datasets import make_classification

    return make_classification(n_samples=1000, n_features=20, n_informative=10, n_redundant=5,
                               n_classes=3, random_state=1)


def _bundled(loader_name: str, scale: float = 1.0):
    def load():
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        return bunch.data / scale, bunch.target

    return load


def _digits():
    # 8x8 images with pixel values 0..16, kept as images so the CNN can use them.
    x, y = _bundled("load_digits", scale=16.0)()
    return x.reshape(-1, 8, 8, 1), y


BUILTIN: dict[str, tuple[Loader, bool]] = {
    "blobs": (_blobs, False),
    "moons": (_moons, False),
    "classification": (_classification, True),
    "digits": (_digits, False),
    "iris": (_bundled("load_iris"), True),
    "wine": (_bundled("load_wine"), True),
    "breast_cancer": (_bundled("load_breast_cancer"), True),
}


def builtin_arrays(name: str) -> tuple[np.ndarray, ...]:
    return BUILTIN[name][0]()
