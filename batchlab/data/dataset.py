"""The in-memory dataset every layer after ``data`` sees, and the checks that guard it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from batchlab.errors import BatchlabError


@dataclass(frozen=True)
class Dataset:
    """Train and test arrays: ``x`` float32 of shape (n, *sample_shape), ``y`` int32 labels 0..K-1.

    ``notes`` says, one line each, what batchlab changed in the user's data to get there (labels
    renumbered, one-hot rows read as indices, a 1-column ``y`` squeezed, how models read a
    multi-dimensional ``x``), so the CLI can print it once and the store keep it with each run.
    They are not part of the fingerprint: the arrays are."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int  # for regression: the number of outputs (target columns)
    notes: tuple[str, ...] = ()
    task: str = "classification"  # or "regression": ``y`` holds float32 targets, shape (n,) or (n, k)

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


def training_subset(dataset: Dataset, rows: int, seed: int = 0) -> Dataset:
    """``dataset`` with ``rows`` of its training rows (each class keeping about its share, drawn
    with ``seed``; ``data/splitting.py``) and its whole test set: a small training set that
    over-fits. Named so ("mnist1d, 1000 training rows"); its fingerprint is its own arrays'."""
    from batchlab.data.splitting import train_test_rows

    if not 2 <= rows <= dataset.n_train:
        raise BatchlabError(f"{dataset.name}: a training subset needs 2 to {dataset.n_train} rows, got {rows}")
    if rows == dataset.n_train:
        return dataset
    stratified = dataset.task == "classification"
    # a test fraction half a row short of n - rows: its ceiling is exactly n - rows, whatever the rounding
    keep, _ = train_test_rows(dataset.y_train, (dataset.n_train - rows - 0.5) / dataset.n_train, seed, stratified)
    keep = np.sort(keep)
    return replace(dataset, name=f"{dataset.name}, {rows} training rows", x_train=dataset.x_train[keep],
                   y_train=dataset.y_train[keep])


def array_digest(*arrays) -> str:
    """SHA-256 over each array's shape, dtype and bytes, in order."""
    import hashlib

    digest = hashlib.sha256()
    for part in arrays:
        arr = np.ascontiguousarray(np.asarray(part))
        digest.update(str((arr.shape, arr.dtype.str)).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


FLOAT32_MAX = float(np.finfo(np.float32).max)


def numeric_array(values, what: str, kind: str) -> np.ndarray:
    """``values`` as a float64 array, refusing what a number array is not: text (even text that
    reads as numbers), objects, complex numbers (the imaginary part would be dropped)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        raise BatchlabError(f"{what} must hold {kind}, got text or objects such as {arr.flat[0].item()!r}"
                            if arr.size else f"{what} must hold {kind}")
    if arr.dtype.kind == "c":
        raise BatchlabError(f"{what} holds complex numbers; give {kind} (batchlab does not drop an imaginary part)")
    try:
        return arr.astype(np.float64) if arr.dtype.kind != "f" else np.asarray(arr, np.float64)
    except (TypeError, ValueError):
        raise BatchlabError(f"{what} must hold {kind}") from None


def as_features(x, what: str, notes: list[str] | None = None) -> np.ndarray:
    """Float32 feature array with at least one feature per sample; NaN/inf, non-numbers and
    values beyond float32's range rejected. A 1-D ``x`` becomes one feature per sample, said in
    ``notes`` when given."""
    arr = numeric_array(x, what, "numbers")
    if arr.ndim == 1:
        arr = arr[:, None]
        _note(notes, f"{what} is 1-D: read as one feature per sample")
    if arr.ndim < 2 or arr.shape[0] == 0:
        raise BatchlabError(f"{what} is empty")
    if arr.size == 0:
        raise BatchlabError(f"{what} has no features")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(arr).any() else "inf"
        raise BatchlabError(f"{what} contains {kind} (first at row {row})")
    _check_float32(arr, what)
    return arr.astype(np.float32)


def _check_float32(arr: np.ndarray, what: str) -> None:
    """Values beyond float32's range would become infinite when batchlab stores them as float32."""
    over = np.abs(arr) > FLOAT32_MAX
    if over.any():
        row = int(np.argwhere(over)[0][0])
        raise BatchlabError(f"{what} holds {arr[tuple(np.argwhere(over)[0])].item():g} (row {row}), beyond float32's "
                            f"range (+-{FLOAT32_MAX:.3g}); rescale it")


def _note(notes: list[str] | None, line: str) -> None:
    if notes is not None and line not in notes:
        notes.append(line)


def as_labels(y, what: str, notes: list[str] | None = None) -> np.ndarray:
    """1-D integer labels; one-hot rows are turned into class indices; fractions are rejected.
    What was changed (one-hot read as indices, a 1-column array squeezed) is appended to
    ``notes`` when given."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):
        raise BatchlabError(f"{what} must be integer class labels") from None
    if arr.ndim == 2 and arr.shape[1] > 1:
        if not (np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise BatchlabError(f"{what} is 2-D but not one-hot; give one integer label per sample")
        _note(notes, f"{what} is one-hot ({arr.shape[0]} rows x {arr.shape[1]} columns): "
                     f"read as class indices 0..{arr.shape[1] - 1} (the column that holds the 1)")
        arr = arr.argmax(axis=1)
    elif arr.ndim == 2:
        if arr.shape[0] > 0:
            _note(notes, f"{what} has shape ({arr.shape[0]}, 1): read as one label per sample")
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise BatchlabError(f"{what} is empty or not 1-D")
    if arr.dtype.kind in "ib" or (arr.dtype.kind == "u" and arr.max() < 2 ** 63):
        return arr.astype(np.int64)
    if arr.dtype.kind != "f":
        raise BatchlabError(f"{what} must be integer class labels, got {arr.dtype} values such as "
                            f"{arr.flat[0].item()!r}")
    if not np.isfinite(arr).all():
        raise BatchlabError(f"{what} contains NaN or inf")
    if (arr != np.round(arr)).any():
        bad = arr[arr != np.round(arr)][0]
        raise BatchlabError(f"{what} must be integer class labels, got {bad.item()!r}")
    if (np.abs(arr) >= 2 ** 53).any():  # where floats stop holding every integer, labels cannot be told apart
        bad = arr[np.abs(arr) >= 2 ** 53][0]
        raise BatchlabError(f"{what} holds the label {bad.item():g}, too large to be read exactly as an integer "
                            f"(|label| must be below 2**53); renumber the classes")
    return arr.astype(np.int64)


def as_targets(y, what: str) -> np.ndarray:
    """Float32 regression targets, one value (shape (n,)) or k values (shape (n, k)) per sample."""
    arr = numeric_array(y, what, "numbers (regression targets)")
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise BatchlabError(f"{what} must be 1-D or 2-D (samples x outputs) and not empty, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1))[0])
        raise BatchlabError(f"{what} contains NaN or inf (first at row {bad}); regression targets must be finite")
    _check_float32(arr.reshape(len(arr), -1), what)
    return arr.astype(np.float32)


def make_regression_dataset(name: str, x_train, y_train, x_test, y_test, *, notes: tuple[str, ...] = ()
                            ) -> Dataset:
    """Validate arrays of a regression problem (features and finite float targets)."""
    said = list(notes)
    xtr, ytr = as_features(x_train, f"{name}: x", said), as_targets(y_train, f"{name}: y")
    xte, yte = as_features(x_test, f"{name}: x_test", said), as_targets(y_test, f"{name}: y_test")
    for rows, targets, what in ((xtr, ytr, "x"), (xte, yte, "x_test")):
        if len(rows) != len(targets):
            raise BatchlabError(f"{name}: {what} has {len(rows)} rows but its targets have {len(targets)}")
    if xtr.shape[1:] != xte.shape[1:] or ytr.shape[1:] != yte.shape[1:]:
        raise BatchlabError(f"{name}: train and test arrays differ in shape per sample")
    outputs = 1 if ytr.ndim == 1 else ytr.shape[1]
    _note(said, _shape_note(name, xtr.shape[1:]))
    return Dataset(name, xtr, ytr, xte, yte, num_classes=outputs, notes=tuple(line for line in said if line),
                   task="regression")


def make_dataset(name: str, x_train, y_train, x_test, y_test, *, notes: tuple[str, ...] = (),
                 task: str = "classification") -> Dataset:
    """Validate arrays and map labels to 0..K-1 (K from the training labels, which must include
    every test label). ``notes`` (what an earlier step such as :func:`split` changed) come first
    in the dataset's notes, then what this step changed. Regression: :func:`make_regression_dataset`."""
    if task == "regression":
        return make_regression_dataset(name, x_train, y_train, x_test, y_test, notes=notes)
    said = list(notes)
    xtr, ytr = as_features(x_train, f"{name}: x", said), as_labels(y_train, f"{name}: y", said)
    xte, yte = as_features(x_test, f"{name}: x_test", said), as_labels(y_test, f"{name}: y_test", said)
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
    _note(said, _renumbering(name, classes))
    _note(said, _shape_note(name, xtr.shape[1:]))
    return Dataset(name, xtr, index[0], xte, index[1], num_classes=len(classes),
                   notes=tuple(line for line in said if line))


def _renumbering(name: str, classes: np.ndarray) -> str:
    """The note for labels that are not already 0..K-1 ("" when they are)."""
    if np.array_equal(classes, np.arange(len(classes))):
        return ""
    pairs = [f"{int(c)}->{i}" for i, c in enumerate(classes)]
    shown = ", ".join(pairs if len(pairs) <= 12 else pairs[:10] + ["...", pairs[-1]])
    return f"{name}: labels renumbered 0..{len(classes) - 1} in sorted order ({shown})"


def _shape_note(name: str, sample_shape: tuple[int, ...]) -> str:
    """How models read samples of more than one dimension ("" for plain feature vectors)."""
    if len(sample_shape) < 2:
        return ""
    return (f"{name}: x has sample shape {tuple(int(d) for d in sample_shape)}: mlp/logreg flatten it "
            f"to {int(np.prod(sample_shape))} features, cnn reads it as an image")


def standardize(ds: Dataset) -> Dataset:
    """Zero mean, unit variance per feature, with statistics of the training set only."""
    mean = ds.x_train.mean(axis=0, keepdims=True)
    std = ds.x_train.std(axis=0, keepdims=True)
    std = np.where(std > 0, std, 1.0)
    return replace(ds, x_train=((ds.x_train - mean) / std).astype(np.float32),  # targets stay as given
                   x_test=((ds.x_test - mean) / std).astype(np.float32))


def split(name: str, x, y, test_fraction: float, seed: int, notes: list[str] | None = None,
          task: str = "classification"):
    """Train/test split when the data brings no test set of its own (stratified by class for
    classification, where every class has two rows and room in both parts); what reading ``x``
    and ``y`` changed is appended to ``notes`` when given. The rows are scikit-learn's
    ``train_test_split`` ones (``data/splitting.py``). Returns x_train, x_test, y_train, y_test."""
    from batchlab.data.splitting import split_sizes, train_test_rows

    if not 0 < test_fraction < 1:
        raise BatchlabError(f"test fraction must lie in (0, 1), got {test_fraction}")
    x = as_features(x, f"{name}: x", notes)
    y = as_targets(y, f"{name}: y") if task == "regression" else as_labels(y, f"{name}: y", notes)
    if len(x) != len(y):
        raise BatchlabError(f"{name}: x has {len(x)} rows but y has {len(y)}")
    if len(x) < 4:
        raise BatchlabError(f"{name}: {len(x)} samples are too few to split into train and test")
    n_train, n_test = split_sizes(len(x), test_fraction)
    if n_train == 0:
        raise BatchlabError(f"{name}: a test fraction of {test_fraction} leaves no training rows of {len(x)}")
    stratified = False
    if task != "regression":
        _, counts = np.unique(y, return_counts=True)
        stratified = counts.min() >= 2 and len(counts) <= test_fraction * len(y) and len(counts) <= n_train
    train, test = train_test_rows(y, test_fraction, seed, stratified)
    return x[train], x[test], y[train], y[test]
