"""The durable sample store: replay, fsync ordering, torn tails, limits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from deepgossip.learn.datastore import (
    HEADER_SIZE,
    DataError,
    DataLimits,
    DataStore,
    check_inputs,
    check_labels,
)


def _batch(n: int, seed: int = 0, shape: tuple[int, ...] = (4, 4)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n)


def test_append_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    x1, y1 = _batch(3, 1)
    x2 = np.random.default_rng(2).random((2, 4, 4)).astype(np.float32)
    y2 = np.array([7, 9])
    with DataStore(path, num_classes=10) as store:
        assert store.count == 0 and store.sample_shape is None
        assert store.append(x1, y1) == 3
        assert store.append(x2, y2) == 5
        assert store.sample_shape == (4, 4)
    with DataStore(path) as again:
        assert again.count == 5
        images, labels = again.images(), again.labels()
    assert images.dtype == np.float32 and images.shape == (5, 4, 4)
    np.testing.assert_allclose(images[:3], x1 / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(images[3:], x2)
    np.testing.assert_array_equal(labels, np.concatenate([y1, y2]))


def test_read_since_gives_only_new_samples(tmp_path: Path) -> None:
    with DataStore(tmp_path / "s.log") as store:
        store.append(*_batch(3, 1))
        seen = store.count
        store.append(*_batch(4, 2))
        store.append(*_batch(2, 3))
        images, labels = store.read(seen)
        assert len(labels) == 6 and images.shape == (6, 4, 4)
        np.testing.assert_array_equal(labels, store.labels()[seen:])
        _, none = store.read(store.count)
        assert len(none) == 0
        _, mid = store.read(5)  # from the middle of a batch
        np.testing.assert_array_equal(mid, store.labels()[5:])


def test_fsync_before_append_returns_and_directory_synced_on_create(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int]] = []
    real_fsync, real_write = os.fsync, os.write

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    def write(fd: int, data: bytes) -> int:
        calls.append(("write", fd))
        return real_write(fd, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "write", write)
    store = DataStore(tmp_path / "new" / "s.log")
    # creation: the file and then its directory are synced
    assert [c[0] for c in calls] == ["fsync", "fsync"]
    assert calls[0][1] == store._fd and calls[1][1] != store._fd
    calls.clear()
    store.append(*_batch(2))
    assert calls[-1] == ("fsync", store._fd)
    assert ("write", store._fd) in calls[:-1]
    store.close()


def test_failed_fsync_leaves_nothing(tmp_path: Path) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "I/O error")

    path = tmp_path / "s.log"
    with DataStore(path) as store:
        store.append(*_batch(2))
        size = path.stat().st_size
        store._fsync = broken
        with pytest.raises(OSError):
            store.append(*_batch(3))
        assert store.count == 2 and path.stat().st_size == size
    with DataStore(path) as again:
        assert again.count == 2


def test_torn_tail_is_truncated_never_half_a_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.log"
    with DataStore(path) as store:
        store.append(*_batch(3, 1))
        good = path.stat().st_size
        store.append(*_batch(5, 2))
    full = path.read_bytes()
    for cut in (good + 7, good + HEADER_SIZE + 20, len(full) - 1):
        path.write_bytes(full[:cut])  # a crash in the middle of the second write
        with caplog.at_level(logging.WARNING), DataStore(path) as store:
            assert store.count == 3
        assert path.stat().st_size == good
        assert "truncating" in caplog.text
        caplog.clear()
    assert (tmp_path / "s.log.dropped").exists()
    with DataStore(path) as store:  # and appending after recovery works
        store.append(*_batch(2, 3))
    with DataStore(path) as store:
        assert store.count == 5


def test_crc_mismatch_drops_the_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.log"
    with DataStore(path) as store:
        store.append(*_batch(3, 1))
        good = path.stat().st_size
        store.append(*_batch(3, 2))
    data = bytearray(path.read_bytes())
    data[good + HEADER_SIZE + 5] ^= 0xFF  # one flipped pixel in the second record
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), DataStore(path) as store:
        assert store.count == 3
    assert "CRC mismatch" in caplog.text


def test_shape_is_fixed_by_the_first_batch(tmp_path: Path) -> None:
    with DataStore(tmp_path / "s.log") as store:
        store.append(*_batch(2, shape=(4, 4)))
        with pytest.raises(DataError) as err:
            store.append(*_batch(2, shape=(5, 5)))
        assert err.value.code == "bad_shape" and "[4, 4]" in err.value.message
        store.append(_batch(2)[0].reshape(2, 16), [1, 2])  # flat is fine
        assert store.count == 4


def test_limits(tmp_path: Path) -> None:
    limits = DataLimits(max_batch=4, max_samples=6)
    with DataStore(tmp_path / "s.log", limits=limits) as store:
        with pytest.raises(DataError) as err:
            store.append(*_batch(5))
        assert (err.value.code, err.value.status) == ("batch_too_large", 413)
        store.append(*_batch(4))
        with pytest.raises(DataError) as err:
            store.append(*_batch(3))
        assert err.value.code == "store_full"
        store.append(*_batch(2))
        assert store.count == 6


@pytest.mark.parametrize(
    ("inputs", "code"),
    [
        (np.zeros((0, 4, 4), np.uint8), "empty_batch"),
        ([], "empty_batch"),
        (np.zeros((2, 3, 3), np.uint8), "bad_shape"),
        (np.zeros(4, np.uint8), "bad_shape"),
        ([[[1, 2], [3]]], "bad_shape"),
        (np.full((1, 4, 4), 256), "out_of_range"),
        (np.full((1, 4, 4), 1.5), "out_of_range"),
        (np.full((1, 4, 4), np.nan), "non_finite"),
        (np.full((1, 4, 4), np.inf, np.float32), "non_finite"),
        (np.array([[["a"] * 4] * 4]), "bad_dtype"),
        (np.ones((1, 4, 4), bool), "bad_dtype"),
    ],
)
def test_bad_inputs(inputs: object, code: str) -> None:
    with pytest.raises(DataError) as err:
        check_inputs(inputs, (4, 4))
    assert err.value.code == code


def test_bad_labels() -> None:
    with pytest.raises(DataError, match="0, 9"):
        check_labels([0, 10], 2, 10)
    with pytest.raises(DataError) as err:
        check_labels([-1, 0], 2, 10)
    assert err.value.code == "label_out_of_range"
    with pytest.raises(DataError) as err:
        check_labels([1.5], 1, 10)
    assert err.value.code == "bad_dtype"
    with pytest.raises(DataError) as err:
        check_labels([1, 2, 3], 2, 10)
    assert err.value.code == "bad_shape"


def test_integer_pixels_in_range_become_bytes() -> None:
    out = check_inputs([[[0, 255], [1, 2]]], (2, 2))
    assert out.dtype == np.uint8
    out = check_inputs(np.array([[0.0, 0.5, 1.0, 0.25]]), (2, 2))
    assert out.dtype == np.float32 and out.shape == (1, 2, 2)
    assert check_inputs(np.zeros((3, 1, 2, 2), np.uint8), (2, 2)).shape == (3, 2, 2)
