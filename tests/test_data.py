import numpy as np
import pytest
from sklearn.datasets import make_blobs

from batchlab.data import BUILTIN, from_arrays, load_dataset, resolve_data_config
from batchlab.errors import BatchlabError


def test_blobs_is_brownlees_exact_split():
    ds = load_dataset(resolve_data_config("blobs"))
    x, y = make_blobs(n_samples=1000, centers=3, n_features=2, cluster_std=2, random_state=2)
    np.testing.assert_allclose(ds.x_train, x[:500], rtol=1e-6)
    np.testing.assert_allclose(ds.x_test, x[500:], rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, y[:500])
    assert ds.num_classes == 3


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_loads(name):
    ds = load_dataset(resolve_data_config(name))
    assert ds.n_train >= len(ds.y_test) > 0
    assert np.isfinite(ds.x_train).all()
    if ds.task == "regression":  # float targets, scaled to unit variance over the whole set
        assert ds.num_classes == 1 and ds.y_train.dtype == np.float32 and ds.y_train.ndim == 1
        whole = np.concatenate([ds.y_train, ds.y_test])
        assert abs(whole.mean()) < 1e-5 and whole.std() == pytest.approx(1, rel=1e-5)
        return
    assert ds.num_classes >= 2
    assert set(np.unique(ds.y_train)) == set(range(ds.num_classes))


def test_prepared_builtin_data_come_back_identical_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_CACHE_DIR", str(tmp_path))
    first = load_dataset(resolve_data_config("digits"))
    assert len(list((tmp_path / "data").glob("digits-*.npz"))) == 1
    again = load_dataset(resolve_data_config("digits"))
    for a, b in ((first.x_train, again.x_train), (first.y_test, again.y_test)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert again.num_classes == first.num_classes and again.task == first.task
    other = load_dataset(resolve_data_config("digits", test_fraction=0.5))  # another split, another file
    assert len(other.y_test) != len(first.y_test)
    # A damaged file is ignored and rewritten.
    for path in (tmp_path / "data").glob("digits-*.npz"):
        path.write_bytes(b"not an npz")
    np.testing.assert_array_equal(load_dataset(resolve_data_config("digits")).x_train, first.x_train)


def test_digits_are_images_and_standardize_uses_train_statistics():
    assert load_dataset(resolve_data_config("digits")).sample_shape == (8, 8, 1)
    wine = load_dataset(resolve_data_config("wine", standardize=True))
    np.testing.assert_allclose(wine.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(wine.x_train.std(axis=0), 1, atol=1e-4)


def test_split_when_no_test_set(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 4)), np.repeat([0, 1], 50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = resolve_data_config(str(tmp_path / "d.npz"), test_fraction=0.25)
    ds = load_dataset(cfg)
    assert ds.n_train == 75 and len(ds.y_test) == 25
    assert cfg.file_sha256 and len(cfg.file_sha256) == 64


def test_labels_are_mapped_to_contiguous_classes():
    x = np.arange(8.0).reshape(4, 2)
    ds, _ = from_arrays(x, [3, 7, 3, 7], x, [7, 3, 3, 7])
    assert ds.y_train.tolist() == [0, 1, 0, 1] and ds.num_classes == 2


def test_csv_with_label_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,target\n" + "\n".join(f"{i},{i * 2},{i % 2}" for i in range(20)))
    ds = load_dataset(resolve_data_config(str(path), label="target"))
    assert ds.sample_shape == (2,) and ds.n_train == 16


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_bytes(content)
    return str(path)


GOOD_X = np.arange(20.0).reshape(10, 2)
GOOD_Y = np.array([0, 1] * 5)


@pytest.mark.parametrize("name, content, message", [
    ("missing.npz", None, "does not exist"),
    ("empty.npz", b"", "is empty"),
    ("garbage.npz", b"not a zip archive at all", "not a readable .npz"),
    ("nox.npz", {"y": GOOD_Y}, "lacks array"),
    ("mismatch.npz", {"x": GOOD_X, "y": GOOD_Y[:7]}, "x has 10 rows but y has 7"),
    ("nan.npz", {"x": np.where(GOOD_X == 5, np.nan, GOOD_X), "y": GOOD_Y}, "NaN"),
    ("inf.npz", {"x": np.where(GOOD_X == 5, np.inf, GOOD_X), "y": GOOD_Y}, "inf"),
    ("oneclass.npz", {"x": GOOD_X, "y": np.zeros(10, int)}, "need at least 2"),
    ("fraction.npz", {"x": GOOD_X, "y": GOOD_Y + 0.5}, "integer class labels"),
    ("strings.npz", {"x": GOOD_X, "y": np.array(["a", "b"] * 5)}, "integer class labels"),
    ("halftest.npz", {"x": GOOD_X, "y": GOOD_Y, "x_test": GOOD_X}, "both x_test and y_test"),
    ("emptyx.npz", {"x": np.zeros((0, 2)), "y": np.zeros(0, int)}, "empty"),
    ("bad.txt", b"1,2,3", "unknown data"),
    ("empty.csv", b"", "is empty"),
    ("nolabel.csv", b"a,b\n1,2\n3,4\n", "no label column 'label'"),
    ("header.csv", b"a,label\n", "no rows"),
    ("text.csv", b"a,label\nx,1\ny,0\nz,1\nw,0\n", "non-numeric"),
    ("ragged.csv", b"a,label\n1,0\n2,1,5,6\n3,0\n", "not a readable CSV"),
])
def test_bad_data_gives_a_clear_error(tmp_path, name, content, message):
    path = str(tmp_path / name) if content is None else write(tmp_path, name, content)
    with pytest.raises(BatchlabError, match=message):
        load_dataset(resolve_data_config(path))


def test_unknown_builtin_name():
    with pytest.raises(BatchlabError, match="unknown data 'mnist_full'"):
        resolve_data_config("mnist_full")
