"""The node's durable store of training samples: an append-only, checksummed log.

The application hands its private samples to its node once; if the node then
crashes, the samples must still be there, or the application would have to keep
and replay its own copy. So the API answers ``ok`` only after :meth:`append` has
written the batch *and* ``os.fsync``-ed it, and a restarted node replays the log.

Layout: a sequence of records, one per accepted batch, each::

    offset size  field (little-endian)
    0      4     magic b"DGDS"
    4      1     version (1)
    5      1     image dtype code (1 = uint8 0..255, 2 = float32 0..1)
    6      1     ndim of one sample (1..3)
    7      1     reserved, zero
    8      4     count n (samples in this batch, > 0)
    12     12    sample shape, 3 x uint32 (unused trailing dimensions are 0)
    24     8     payload length P
    32     4     CRC32 of bytes 0..31 and of the payload
    36     P     images (n x shape, dtype) then labels (n x int64)

A crash in the middle of a write leaves a *torn* last record: short, or with a
CRC that does not match. Replay stops at the first record that does not check
out, truncates the file there (logging a warning and keeping the dropped bytes
in ``<log>.dropped`` for inspection), so a batch is either entirely in the store
or entirely absent, never half of it.

Pixels are kept as they arrived (uint8 batches stay uint8, a quarter of the
memory); :meth:`DataStore.images` and :meth:`DataStore.read` return float32 in
[0, 1], the scale every model of the zoo expects.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = [
    "DATA_FILE",
    "DataError",
    "DataLimits",
    "DataStore",
    "check_inputs",
    "check_labels",
    "to_unit_float",
]

log = logging.getLogger(__name__)

DATA_FILE: Final = "samples.dglog"
"""Name of the log inside the node's data directory."""

MAGIC: Final = b"DGDS"
VERSION: Final = 1
_HEAD = struct.Struct("<4sBBBBI3IQ")  # 32 bytes, covered by the CRC
_CRC = struct.Struct("<I")
HEADER_SIZE: Final = _HEAD.size + _CRC.size  # 36
_DTYPE_CODES: Final[dict[int, np.dtype[Any]]] = {1: np.dtype(np.uint8), 2: np.dtype("<f4")}
_CODE_OF: Final = {dtype: code for code, dtype in _DTYPE_CODES.items()}
_LABEL_DTYPE: Final = np.dtype("<i8")


class DataError(ValueError):
    """A batch the store refuses; ``code`` is the API's machine-readable reason.

    ``status`` is the HTTP status the API answers with, so the rules live in one
    place (here) and the API does not re-derive them.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class DataLimits:
    """What one node accepts. Both bounds exist so one request, or one
    application, cannot make the node allocate without limit."""

    max_batch: int = 10_000
    """Most samples in one :meth:`DataStore.append` (one ``/v1/train`` call)."""
    max_samples: int = 100_000
    """Most samples the store holds in total; further batches are refused."""

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_samples < 1:
            raise ValueError("max_batch and max_samples must be >= 1")


# -- validation (shared with the API, which checks predict inputs the same way) --------


def _as_array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise DataError("bad_shape", f"{what} are not a rectangular array: {exc}") from None


def check_inputs(images: Any, sample_shape: Sequence[int] | None) -> np.ndarray:
    """Validate a batch of images; return it as uint8 or float32, shaped (n, *shape).

    Accepted: uint8 values (0..255 by construction), integer arrays whose values
    lie in 0..255 (JSON integers arrive as int64), or floats in [0, 1] (float64 is
    narrowed to float32). ``sample_shape`` (if known) fixes the shape of one
    sample; a batch flattened to ``(n, prod(sample_shape))``, or with an explicit
    single channel ``(n, 1, *sample_shape)``, is reshaped to it.
    """
    arr = _as_array(images, "inputs")
    if arr.ndim >= 1 and arr.shape[0] == 0:
        raise DataError("empty_batch", "the batch holds no samples")
    if arr.dtype.kind not in "iuf":
        raise DataError("bad_dtype", f"inputs must be uint8 or float numbers, not {arr.dtype}")
    if not 2 <= arr.ndim <= 4:
        raise DataError(
            "bad_shape", f"inputs must be (n, ...) with 1-3 dims per sample, got {list(arr.shape)}"
        )
    if sample_shape is not None:
        shape = tuple(int(d) for d in sample_shape)
        if arr.shape[1:] in ((math.prod(shape),), (1, *shape)):  # flat, or with C = 1
            arr = arr.reshape((arr.shape[0], *shape))
        if arr.shape[1:] != shape:
            flat = math.prod(shape)
            raise DataError(
                "bad_shape",
                f"each sample must be shaped {list(shape)} (or flat [{flat}]), "
                f"got {list(arr.shape[1:])}",
            )
    if arr.size and min(arr.shape[1:]) == 0:
        raise DataError("bad_shape", f"samples must not be empty, got shape {list(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(
                "out_of_range", f"integer pixels must be 0..255, got values in [{lo}, {hi}]"
            )
        return arr.astype(np.uint8)
    floats = arr.astype(np.float32, copy=False)
    if not bool(np.isfinite(floats).all()):
        raise DataError("non_finite", "inputs contain NaN or Inf")
    lo_f, hi_f = float(floats.min()), float(floats.max())
    if lo_f < 0.0 or hi_f > 1.0:
        raise DataError(
            "out_of_range",
            f"float pixels must lie in [0, 1] (send 0..255 as integers), got [{lo_f}, {hi_f}]",
        )
    return floats


def check_labels(labels: Any, count: int, num_classes: int | None) -> np.ndarray:
    """Validate labels: ``count`` integers in ``[0, num_classes)``; return int64."""
    arr = _as_array(labels, "labels")
    if arr.dtype.kind not in "iu":
        raise DataError("bad_dtype", f"labels must be integers, not {arr.dtype}")
    if arr.shape != (count,):
        raise DataError(
            "bad_shape", f"labels must be a list of {count} integers, got shape {list(arr.shape)}"
        )
    if count:
        lo, hi = int(arr.min()), int(arr.max())
        top = num_classes - 1 if num_classes is not None else np.iinfo(np.int64).max
        if lo < 0 or hi > top:
            raise DataError(
                "label_out_of_range",
                f"labels must lie in [0, {top}], got values in [{lo}, {hi}]",
            )
    return arr.astype(_LABEL_DTYPE)


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels / 255, float pixels as float32: the scale the models expect."""
    if images.dtype == np.uint8:
        out = images.astype(np.float32)
        out /= np.float32(255.0)
        return out
    return images.astype(np.float32, copy=False)


# -- the store ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chunk:
    images: np.ndarray  # uint8 or float32, (n, *shape)
    labels: np.ndarray  # int64, (n,)


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable (POSIX: fsync the directory)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class DataStore:
    """Accepted training samples of one node, durable on disk and held in memory.

    Thread-safe: the API appends from a worker thread while the learner reads
    from its own. ``count`` only grows, so a reader can remember how far it got
    and later ask for the rest (:meth:`read`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        limits: DataLimits | None = None,
        sample_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        fsync: Callable[[int], None] | None = None,
    ) -> None:
        """Open (creating if needed) the log at ``path`` and replay it.

        ``sample_shape`` pins the shape of one sample up front (the learner's
        input shape); otherwise the first batch fixes it. ``num_classes`` bounds
        the labels. ``fsync`` is for tests; it defaults to :func:`os.fsync`.
        """
        self.path = Path(path)
        self.limits = limits or DataLimits()
        self.num_classes = num_classes
        self._fsync = fsync or os.fsync
        self._lock = threading.Lock()
        self._chunks: list[_Chunk] = []
        self._starts: list[int] = []
        self._count = 0
        self._shape: tuple[int, ...] | None = (
            tuple(int(d) for d in sample_shape) if sample_shape is not None else None
        )
        if self._shape is not None and not 1 <= len(self._shape) <= 3:
            raise ValueError(f"sample_shape must have 1-3 dimensions, got {self._shape}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if created:
                self._fsync(self._fd)
                _fsync_dir(self.path.parent)
            self._replay()
        except BaseException:
            os.close(self._fd)
            raise

    # -- reading -------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self._shape

    def read(self, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``start..count`` as (float32 images in [0, 1], int64 labels).

        The learner calls this with the count it saw last time to get only the
        new samples; the result is a fresh copy it may keep.
        """
        with self._lock:
            chunks, starts, count, shape = (
                list(self._chunks),
                list(self._starts),
                self._count,
                self._shape,
            )
        start = max(0, min(start, count))
        images: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for chunk, first in zip(chunks, starts, strict=True):
            end = first + len(chunk.labels)
            if end <= start:
                continue
            skip = max(0, start - first)
            images.append(to_unit_float(chunk.images[skip:]))
            labels.append(chunk.labels[skip:])
        if not images:
            return np.zeros((0, *(shape or ())), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.concatenate(images), np.concatenate(labels)

    def images(self) -> np.ndarray:
        """Every sample's image, float32 in [0, 1], shaped (count, *sample_shape)."""
        return self.read(0)[0]

    def labels(self) -> np.ndarray:
        """Every sample's label (int64)."""
        with self._lock:
            chunks = list(self._chunks)
        if not chunks:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([c.labels for c in chunks])

    # -- writing -------------------------------------------------------------------------

    def validate(self, images: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Check a batch against the shape, dtype, range and size rules.

        Raises :class:`DataError`; returns the batch as it would be stored.
        """
        x = check_inputs(images, self._shape)
        y = check_labels(labels, x.shape[0], self.num_classes)
        n = x.shape[0]
        if n > self.limits.max_batch:
            raise DataError(
                "batch_too_large",
                f"{n} samples exceed the limit of {self.limits.max_batch} per request",
                413,
            )
        if self._count + n > self.limits.max_samples:
            raise DataError(
                "store_full",
                f"the node holds {self._count} of at most {self.limits.max_samples} samples; "
                f"{n} more do not fit",
                409,
            )
        return x, y

    def append(self, images: Any, labels: Any) -> int:
        """Validate and durably store one batch; return the new sample count.

        Returns only after the record is written and ``fsync``-ed. On any
        error the file is cut back to where it was, so a failed append leaves
        nothing behind. All or nothing, per batch.
        """
        with self._lock:
            x, y = self.validate(images, labels)
            x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("<"))
            y = np.ascontiguousarray(y, dtype=_LABEL_DTYPE)
            record = self._record(x, y)
            size = os.fstat(self._fd).st_size
            try:
                _write_all(self._fd, memoryview(record))
                self._fsync(self._fd)
            except BaseException:
                os.ftruncate(self._fd, size)
                raise
            self._add(x.copy(), y.copy())
            return self._count

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> DataStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _add(self, x: np.ndarray, y: np.ndarray) -> None:
        if self._shape is None:
            self._shape = tuple(x.shape[1:])
        self._chunks.append(_Chunk(x, y))
        self._starts.append(self._count)
        self._count += len(y)

    @staticmethod
    def _record(x: np.ndarray, y: np.ndarray) -> bytes:
        dims = list(x.shape[1:]) + [0] * (4 - x.ndim)
        payload_len = x.nbytes + y.nbytes
        head = _HEAD.pack(
            MAGIC, VERSION, _CODE_OF[x.dtype], x.ndim - 1, 0, x.shape[0], *dims, payload_len
        )
        crc = zlib.crc32(y.tobytes(), zlib.crc32(x.tobytes(), zlib.crc32(head)))
        return b"".join((head, _CRC.pack(crc), x.tobytes(), y.tobytes()))

    def _replay(self) -> None:
        size = os.fstat(self._fd).st_size
        offset = 0
        with open(self.path, "rb") as stream:
            while offset < size:
                problem = self._replay_record(stream, size - offset)
                if problem is not None:
                    self._truncate(stream, offset, size, problem)
                    return
                offset = stream.tell()

    def _replay_record(self, stream: Any, remaining: int) -> str | None:
        """Read one record at the stream's position; return why it is bad, or None."""
        raw = stream.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            return "short header"
        magic, version, code, ndim, _, n, d0, d1, d2, payload_len = _HEAD.unpack_from(raw)
        (crc,) = _CRC.unpack_from(raw, _HEAD.size)
        if magic != MAGIC or version != VERSION:
            return "bad magic or version"
        dtype = _DTYPE_CODES.get(code)
        if dtype is None or not 1 <= ndim <= 3 or n < 1:
            return "bad record header"
        shape = (d0, d1, d2)[:ndim]
        expected = n * (math.prod(shape) * dtype.itemsize + _LABEL_DTYPE.itemsize)
        if payload_len != expected or min(shape) < 1:
            return "payload length disagrees with the header"
        if HEADER_SIZE + payload_len > remaining:
            return "short payload"
        payload = stream.read(payload_len)
        if len(payload) != payload_len:
            return "short payload"
        if zlib.crc32(payload, zlib.crc32(raw[: _HEAD.size])) != crc:
            return "CRC mismatch"
        if self._shape is not None and shape != self._shape:
            return f"sample shape {list(shape)} differs from {list(self._shape)}"
        split = n * math.prod(shape) * dtype.itemsize
        x = np.frombuffer(payload, dtype=dtype, count=n * math.prod(shape)).reshape((n, *shape))
        y = np.frombuffer(payload, dtype=_LABEL_DTYPE, count=n, offset=split)
        self._add(x.astype(dtype.newbyteorder("=")), y.astype(np.int64))
        return None

    def _truncate(self, stream: Any, offset: int, size: int, problem: str) -> None:
        stream.seek(offset)
        dropped = stream.read()
        side = self.path.with_name(self.path.name + ".dropped")
        with open(side, "ab") as out:
            out.write(dropped)
        log.warning(
            "%s: %s at byte %d; truncating %d trailing bytes (a batch torn by a crash "
            "is dropped whole; the bytes are kept in %s). %d samples recovered.",
            self.path,
            problem,
            offset,
            size - offset,
            side,
            self._count,
        )
        os.ftruncate(self._fd, offset)
        self._fsync(self._fd)
