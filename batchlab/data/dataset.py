"""The in-memory dataset every layer after ``data`` sees, and the checks that guard it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchlab.errors import BatchlabError


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays: ``x`` float32 of shape (n, *sample_shape), ``y`` int32 labels 0..K-1."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 of the arrays' shapes, dtypes and contents: two datasets that share a name
        but not their numbers never share stored runs."""
        return array_digest(self.x_train, self.y_train, self.x_test, self.y_test)


def array_digest(*arrays) -> str:
    """SHA-256 over each array's shape, dtype and bytes, in order."""
    import hashlib

    digest = hashlib.sha256()
    for part in arrays:
        arr = np.ascontiguousarray(np.asarray(part))
        digest.update(str((arr.shape, arr.dtype.str)).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def as_features(x, what: str) -> np.ndarray:
    """Float32 feature array with at least one feature per sample; NaN/inf and non-numbers rejected."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise BatchlabError(f"{what} must be numeric") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise BatchlabError(f"{what} is empty")
    if arr.size == 0:
        raise BatchlabError(f"{what} has no features")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(arr).any() else "inf"
        raise BatchlabError(f"{what} contains {kind} (first at row {row})")
    return arr.astype(np.float32)


def as_labels(y, what: str) -> np.ndarray:
    """1-D integer labels; one-hot rows are turned into class indices; fractions are rejected."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        raise BatchlabError(f"{what} must be integer class labels") from None
    if arr.ndim == 2 and arr.shape[1] > 1:
        if not (np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise BatchlabError(f"{what} is 2-D but not one-hot; give one integer label per sample")
        arr = arr.argmax(axis=1)
    elif arr.ndim == 2:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise BatchlabError(f"{what} is empty or not 1-D")
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind != "f":
        raise BatchlabError(f"{what} must be integer class labels, got values like {arr.flat[0]!r}")
    if not np.isfinite(arr).all():
        raise BatchlabError(f"{what} contains NaN or inf")
    if (arr != np.round(arr)).any():
        bad = arr[arr != np.round(arr)][0]
        raise BatchlabError(f"{what} must be integer class labels, got {bad!r}")
    return arr.astype(np.int64)


def make_dataset(name: str, x_train, y_train, x_test, y_test) -> Dataset:
    """Validate arrays and map labels to 0..K-1 (K from the union of train and test labels)."""
    xtr, ytr = as_features(x_train, f"{name}: x"), as_labels(y_train, f"{name}: y")
    xte, yte = as_features(x_test, f"{name}: x_test"), as_labels(y_test, f"{name}: y_test")
    if len(xtr) != len(ytr):
        raise BatchlabError(f"{name}: x has {len(xtr)} rows but y has {len(ytr)}")
    if len(xte) != len(yte):
        raise BatchlabError(f"{name}: x_test has {len(xte)} rows but y_test has {len(yte)}")
    if xtr.shape[1:] != xte.shape[1:]:
        raise BatchlabError(f"{name}: x has sample shape {xtr.shape[1:]} but x_test has {xte.shape[1:]}")
    classes = np.unique(ytr)
    if len(classes) < 2:
        raise BatchlabError(f"{name}: the training labels hold {len(classes)} class; need at least 2")
    unseen = np.setdiff1d(np.unique(yte), classes)
    if len(unseen):
        raise BatchlabError(f"{name}: test labels {unseen.tolist()} never occur in the training labels")
    index = np.searchsorted(classes, ytr).astype(np.int32), np.searchsorted(classes, yte).astype(np.int32)
    return Dataset(name, xtr, index[0], xte, index[1], num_classes=len(classes))


def standardize(ds: Dataset) -> Dataset:
    """Zero mean, unit variance per feature, with statistics of the training set only."""
    mean = ds.x_train.mean(axis=0, keepdims=True)
    std = ds.x_train.std(axis=0, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return Dataset(ds.name, ((ds.x_train - mean) / std).astype(np.float32), ds.y_train,
                   ((ds.x_test - mean) / std).astype(np.float32), ds.y_test, ds.num_classes)


def split(name: str, x, y, test_fraction: float, seed: int):
    """Stratified train/test split when the data brings no test set of its own."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise BatchlabError(f"test fraction must lie in (0, 1), got {test_fraction}")
    x, y = as_features(x, f"{name}: x"), as_labels(y, f"{name}: y")
    if len(x) != len(y):
        raise BatchlabError(f"{name}: x has {len(x)} rows but y has {len(y)}")
    if len(x) < 4:
        raise BatchlabError(f"{name}: {len(x)} samples are too few to split into train and test")
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 and len(counts) <= test_fraction * len(y) else None
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=stratify)
