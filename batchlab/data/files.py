"""User data files: ``.npz`` (arrays ``x``, ``y``, optional ``x_test``, ``y_test``) and ``.csv``."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from batchlab.errors import BatchlabError


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_file(path: Path) -> None:
    if not path.exists():
        raise BatchlabError(f"data file {path} does not exist")
    if not path.is_file():
        raise BatchlabError(f"data path {path} is not a file")
    if path.stat().st_size == 0:
        raise BatchlabError(f"data file {path} is empty")


def read_npz(path: Path) -> tuple:
    """(x, y) or (x, y, x_test, y_test) from an ``.npz`` archive."""
    check_file(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BatchlabError(f"data file {path} is not a readable .npz archive ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise BatchlabError(f"data file {path} lacks array(s) {missing}; found {sorted(arrays)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise BatchlabError(f"data file {path} must hold both x_test and y_test, or neither")
    if "x_test" in arrays:
        return arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]
    return arrays["x"], arrays["y"]


def _header(path: Path) -> list[str]:
    """The CSV file's column names as written (pandas renames a repeated one ``name.1``)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def read_csv(path: Path, label: str) -> tuple:
    """(x, y) from a CSV file with a header row; ``label`` names the label column."""
    import pandas as pd

    check_file(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchlabError(f"data file {path} is not a readable CSV file ({first})") from None
    if frame.empty:
        raise BatchlabError(f"data file {path} has a header but no rows")
    header = _header(path)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise BatchlabError(f"data file {path} has column name(s) {repeated} more than once; name each column once")
    if label not in frame.columns:
        raise BatchlabError(f"data file {path} has no label column {label!r}; columns: {list(frame.columns)}")
    features = frame.drop(columns=[label])
    if features.shape[1] == 0:
        raise BatchlabError(f"data file {path} has no feature columns besides {label!r}")
    non_numeric = [c for c in features.columns if features[c].dtype.kind not in "iufb"]
    if non_numeric:
        raise BatchlabError(f"data file {path}: non-numeric feature column(s) {non_numeric}")
    return features.to_numpy(dtype=np.float64), frame[label].to_numpy()
