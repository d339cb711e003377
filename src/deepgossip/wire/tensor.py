"""Tensor frames: raw bytes with an explicit, validated header. Never pickle.

Unpickling (or ``torch.load``-ing) bytes from a peer hands that peer arbitrary code
execution, and msgpack or the safetensors Python API copy every tensor (~0.3 GB/s
measured). A tensor frame is therefore a small msgpack header followed by the raw
little-endian bytes of every tensor, decoded with ``numpy.frombuffer`` (no copy).

Layout::

    offset size  field
    0      4     magic b"DGTF"
    4      1     version (1)
    5      3     reserved, zero
    8      4     header length H (big-endian)
    12     8     data length D (big-endian)
    20     H     msgpack header: [[name, encoding, dtype, shape, segments, param], ...]
    ...          zero padding up to a multiple of 64 (= data start)
    start  D     data: each segment at data start + offset, 64-byte aligned

``segments`` is a list of ``[offset, length]`` pairs relative to the data start:
one for ``dense``, ``fp16`` and ``int8``; two (indices, values) for ``sparse``.
``dtype`` is the dtype a tensor decodes to; what is stored depends on ``encoding``:

========  =========================  =============================================
encoding  stored                      decodes to / error
========  =========================  =============================================
dense     the values, in ``dtype``    exact
fp16      float16                     float32; relative error <= 2^-11 (4.9e-4) for
                                      |x| >= 6.1e-5, absolute <= 2^-25 below
int8      int8, symmetric per tensor  float32; ``param`` = scale = max|x| / 127;
                                      absolute error <= scale / 2
sparse    flat indices (``param``:    a dense array of ``shape`` with zeros
          int32/int64, strictly       elsewhere (or a :class:`SparseArray`);
          increasing) + values        values exact
========  =========================  =============================================

Quantized encodings apply to float32 tensors; tensors of other dtypes requested
with ``fp16``/``int8`` are sent ``dense`` (so a whole state dict can be encoded
with one encoding). bfloat16 has no numpy dtype and is not supported: cast first.

Decoding validates the whole header *before* touching or allocating data: dtype in
the whitelist, dimensions non-negative, total elements within ``max_elements``,
every segment's length equal to elements x itemsize, segments inside the frame and
non-overlapping, sparse indices in range and strictly increasing (so unique),
bools 0 or 1, and no NaN/Inf unless ``allow_nonfinite``. A frame that declares
10^12 elements is refused from its header alone. Every failure is a
:class:`~.errors.WireError` (mostly :class:`~.errors.MalformedTensor`).

Dense tensors decode to *views* of the frame: read-only if the frame is ``bytes``,
writable (and aliasing it) if it is a ``bytearray``; :func:`to_torch` copies only the
read-only ones. For sending, :func:`encode_tensor_parts` returns the frame as a list
of buffers that reference the source arrays, so a stream writer can send 1 MiB
slices (:func:`iter_slices`) of a 40 MB update without ever joining it.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import msgpack
import numpy as np

from deepgossip.wire.errors import (
    BadVersion,
    MalformedTensor,
    NonFiniteTensor,
)
from deepgossip.wire.limits import DEFAULT_LIMITS, WireLimits

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPES",
    "INDEX_DTYPES",
    "TENSOR_MAGIC",
    "Encoding",
    "SparseArray",
    "decode_tensor_frame",
    "decode_tensors",
    "encode_sparse",
    "encode_tensor_parts",
    "encode_tensors",
    "iter_slices",
    "to_torch",
]

TENSOR_MAGIC: Final = b"DGTF"
TENSOR_VERSION: Final = 1
_PREFIX = struct.Struct(">4sB3xIQ")
PREFIX_SIZE: Final = _PREFIX.size  # 20
ALIGN: Final = 64
"""Segment alignment: a cache line, and enough for any SIMD load of any dtype."""

Encoding = Literal["dense", "fp16", "int8", "sparse"]
ENCODINGS: Final = ("dense", "fp16", "int8", "sparse")

DTYPES: Final[Mapping[str, np.dtype[Any]]] = {
    name: np.dtype(code)
    for name, code in {
        "float16": "<f2",
        "float32": "<f4",
        "float64": "<f8",
        "int8": "i1",
        "uint8": "u1",
        "int16": "<i2",
        "int32": "<i4",
        "int64": "<i8",
        "bool": "?",
    }.items()
}
"""The dtypes a frame may carry, by wire name (all little-endian)."""

INDEX_DTYPES: Final = ("int32", "int64")
FP16_MAX: Final = 65504.0
INT8_LEVELS: Final = 127
"""Symmetric int8: [-127, 127], so that -x quantizes to exactly -q(x)."""
INT8_MAX_SCALE: Final = float(
    np.nextafter(np.float32(float(np.finfo(np.float32).max) / INT8_LEVELS), np.float32(0))
)
"""Largest float32 scale whose products with [-127, 127] stay finite in float32; the
decoder rejects larger (and NaN) scales, the encoder never makes one."""

TensorLike = Any
"""A numpy array or a torch tensor (torch is imported only when one is given)."""


@dataclass(frozen=True, slots=True)
class SparseArray:
    """A tensor given by flat ``indices`` into ``shape`` and their ``values``."""

    indices: np.ndarray
    values: np.ndarray
    shape: tuple[int, ...]

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    @property
    def size(self) -> int:
        return _product(self.shape)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.size, dtype=self.values.dtype)
        out[self.indices] = self.values
        return out.reshape(self.shape)


# -- encoding ----------------------------------------------------------------------


def _product(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _to_numpy(value: TensorLike) -> np.ndarray:
    if type(value).__module__.partition(".")[0] == "torch" and hasattr(value, "detach"):
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            raise ValueError("bfloat16 is not supported on the wire; cast to float32 first")
        value = tensor.numpy()
    # Not ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return np.asarray(value, order="C")


def _wire_dtype(arr: np.ndarray) -> str:
    name = arr.dtype.name
    if name not in DTYPES:
        raise ValueError(f"dtype {arr.dtype} is not allowed on the wire ({', '.join(DTYPES)})")
    return name


def _le_bytes(arr: np.ndarray, wire: np.dtype[Any]) -> memoryview:
    """The raw little-endian bytes of ``arr`` as a flat byte view (no copy if possible)."""
    arr = np.ascontiguousarray(arr, dtype=wire)
    return memoryview(arr.reshape(-1).view(np.uint8))


def _check_finite_out(name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind == "f" and arr.size and not _all_finite(arr):
        raise ValueError(f"{name}: contains NaN or Inf (pass allow_nonfinite=True to send)")


class _Builder:
    def __init__(self) -> None:
        self.entries: list[list[Any]] = []
        self.segments: list[memoryview] = []
        self.offsets: list[int] = []
        self.data_len = 0

    def segment(self, data: memoryview) -> list[int]:
        offset = _align(self.data_len)
        self.segments.append(data)
        self.offsets.append(offset)
        self.data_len = offset + data.nbytes
        return [offset, data.nbytes]


def _add_dense(
    b: _Builder, name: str, arr: np.ndarray, encoding: str, allow_nonfinite: bool
) -> None:
    dtype = _wire_dtype(arr)
    shape = [int(d) for d in arr.shape]
    if dtype != "float32" and encoding in ("fp16", "int8"):
        encoding = "dense"
    # int8 cannot represent NaN/Inf at all; the other encodings carry them if allowed.
    if encoding == "int8" or not allow_nonfinite:
        _check_finite_out(name, arr)
    if encoding == "dense":
        b.entries.append(
            [name, "dense", dtype, shape, [b.segment(_le_bytes(arr, DTYPES[dtype]))], None]
        )
    elif encoding == "fp16":
        if arr.size and float(np.max(np.abs(arr))) > FP16_MAX:
            raise ValueError(f"{name}: values beyond +-{FP16_MAX} overflow float16; use dense")
        half = _le_bytes(arr, DTYPES["float16"])
        b.entries.append([name, "fp16", "float32", shape, [b.segment(half)], None])
    elif encoding == "int8":
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        scale = min(float(np.float32(peak / INT8_LEVELS)), INT8_MAX_SCALE)
        if scale > 0:
            q = np.clip(np.rint(arr / np.float32(scale)), -INT8_LEVELS, INT8_LEVELS)
        else:
            q = np.zeros(arr.shape, dtype=np.int8)
        seg = b.segment(_le_bytes(q, DTYPES["int8"]))
        b.entries.append([name, "int8", "float32", shape, [seg], scale])
    elif encoding == "sparse":
        flat = arr.reshape(-1)
        idx = np.flatnonzero(flat)
        _add_sparse(b, name, SparseArray(idx, flat[idx], tuple(shape)), allow_nonfinite)
    else:
        raise ValueError(f"unknown encoding {encoding!r} (one of {ENCODINGS})")


def _add_sparse(b: _Builder, name: str, sp: SparseArray, allow_nonfinite: bool) -> None:
    shape = [int(d) for d in sp.shape]
    if any(d < 0 for d in shape):
        raise ValueError(f"{name}: negative dimension")
    size = _product(shape)
    idx = _to_numpy(sp.indices).reshape(-1)
    values = _to_numpy(sp.values).reshape(-1)
    if idx.shape != values.shape:
        raise ValueError(f"{name}: {idx.size} indices but {values.size} values")
    if idx.size and idx.dtype.kind not in "iu":
        raise ValueError(f"{name}: indices must be integers")
    index_dtype = "int32" if size <= np.iinfo(np.int32).max + 1 else "int64"
    idx = idx.astype(DTYPES[index_dtype], copy=False)
    if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
        order = np.argsort(idx, kind="stable")
        idx, values = idx[order], values[order]
        if bool(np.any(idx[1:] == idx[:-1])):
            raise ValueError(f"{name}: duplicate sparse indices")
    if idx.size and (int(idx[0]) < 0 or int(idx[-1]) >= size):
        raise ValueError(f"{name}: sparse index out of range for shape {tuple(shape)}")
    dtype = _wire_dtype(values)
    if not allow_nonfinite:
        _check_finite_out(name, values)
    segs = [
        b.segment(_le_bytes(idx, DTYPES[index_dtype])),
        b.segment(_le_bytes(values, DTYPES[dtype])),
    ]
    b.entries.append([name, "sparse", dtype, shape, segs, index_dtype])


def encode_tensor_parts(
    tensors: Mapping[str, TensorLike | SparseArray],
    *,
    encoding: Encoding | Mapping[str, Encoding] = "dense",
    allow_nonfinite: bool = False,
    limits: WireLimits = DEFAULT_LIMITS,
) -> list[bytes | memoryview]:
    """Build a tensor frame as a list of buffers, without copying dense tensors.

    ``encoding`` applies to every tensor, or per name from a mapping (missing names:
    ``dense``); :class:`SparseArray` values are always ``sparse``. The buffers
    reference the source arrays: do not modify them until the frame is sent.
    Raises ``ValueError``/``TypeError`` for tensors that cannot be sent.
    """
    if len(tensors) > limits.max_tensors:
        raise ValueError(f"{len(tensors)} tensors exceed the limit of {limits.max_tensors}")
    b = _Builder()
    for name, value in tensors.items():
        if not isinstance(name, str) or not 0 < len(name) <= limits.max_tensor_name:
            raise ValueError(f"tensor name must be 1-{limits.max_tensor_name} characters")
        if isinstance(value, SparseArray):
            _add_sparse(b, name, value, allow_nonfinite)
            continue
        enc = encoding if isinstance(encoding, str) else encoding.get(name, "dense")
        arr = _to_numpy(value)
        if arr.ndim > limits.max_ndim:
            raise ValueError(f"{name}: {arr.ndim} dimensions exceed {limits.max_ndim}")
        _add_dense(b, name, arr, enc, allow_nonfinite)
    header = msgpack.packb([b.entries], use_bin_type=True)
    if len(header) > limits.max_tensor_header:
        raise ValueError(f"tensor header of {len(header)} B exceeds {limits.max_tensor_header}")
    data_start = _align(PREFIX_SIZE + len(header))
    prefix = _PREFIX.pack(TENSOR_MAGIC, TENSOR_VERSION, len(header), b.data_len)
    parts: list[bytes | memoryview] = [
        prefix + header + bytes(data_start - PREFIX_SIZE - len(header))
    ]
    pos = 0
    for offset, seg in zip(b.offsets, b.segments, strict=True):
        if offset > pos:
            parts.append(bytes(offset - pos))
        if seg.nbytes:
            parts.append(seg)
        pos = offset + seg.nbytes
    return parts


def encode_tensors(
    tensors: Mapping[str, TensorLike | SparseArray],
    *,
    encoding: Encoding | Mapping[str, Encoding] = "dense",
    allow_nonfinite: bool = False,
    limits: WireLimits = DEFAULT_LIMITS,
) -> bytes:
    """Encode tensors into one contiguous frame (see :func:`encode_tensor_parts`)."""
    return b"".join(
        encode_tensor_parts(
            tensors, encoding=encoding, allow_nonfinite=allow_nonfinite, limits=limits
        )
    )


def encode_sparse(
    name: str,
    indices: TensorLike,
    values: TensorLike,
    shape: Sequence[int],
    *,
    allow_nonfinite: bool = False,
) -> bytes:
    """A frame holding one sparse tensor: flat ``indices`` into ``shape``, ``values``."""
    sp = SparseArray(_to_numpy(indices), _to_numpy(values), tuple(int(d) for d in shape))
    return encode_tensors({name: sp}, allow_nonfinite=allow_nonfinite)


def iter_slices(
    parts: Sequence[bytes | memoryview], max_chunk: int = 1 << 20
) -> Iterator[memoryview]:
    """Yield the frame as byte views of at most ``max_chunk`` (default 1 MiB).

    One ``write()`` of 40 MB is quadratic in asyncio's send buffer on Python 3.11
    (see DESIGN.md); writing <= 1 MiB slices with ``drain()`` runs at ~2 GB/s.
    """
    for part in parts:
        view = memoryview(part).cast("B")
        for start in range(0, view.nbytes, max_chunk):
            yield view[start : start + max_chunk]


# -- decoding ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    encoding: str
    dtype: str
    shape: tuple[int, ...]
    size: int
    segments: tuple[tuple[int, int], ...]
    param: Any


_F16_EXPONENT: Final = 0x7C00


def _all_finite(arr: np.ndarray) -> bool:
    if arr.dtype.itemsize == 2:
        # numpy compares float16 in software (~30x slower than float32); a float16 is
        # NaN or Inf iff its exponent bits are all ones, so test the bits instead.
        return int(np.max(arr.view(np.uint16) & 0x7FFF)) < _F16_EXPONENT
    # max and min propagate NaN and expose +-Inf; two SIMD passes, no temporary.
    return bool(np.isfinite(np.max(arr)) and np.isfinite(np.min(arr)))


def _parse_entry(raw: Any, limits: WireLimits) -> _Entry:
    if type(raw) is not list or len(raw) != 6:
        raise MalformedTensor("tensor entry must be a 6-element list")
    name, encoding, dtype, shape, segments, param = raw
    if type(name) is not str or not 0 < len(name) <= limits.max_tensor_name:
        raise MalformedTensor("bad tensor name")
    if type(encoding) is not str or encoding not in ENCODINGS:
        raise MalformedTensor(f"{name}: unknown encoding")
    if type(dtype) is not str or dtype not in DTYPES:
        raise MalformedTensor(f"{name}: dtype not allowed")
    if type(shape) is not list or len(shape) > limits.max_ndim:
        raise MalformedTensor(f"{name}: bad shape")
    size = 1
    for d in shape:
        if type(d) is not int or d < 0:
            raise MalformedTensor(f"{name}: bad dimension")
        size *= d
        if size > limits.max_tensor_elements:
            raise MalformedTensor(f"{name}: too many elements")
    n_segments = 2 if encoding == "sparse" else 1
    if type(segments) is not list or len(segments) != n_segments:
        raise MalformedTensor(f"{name}: expected {n_segments} segments")
    segs = []
    for seg in segments:
        if (
            type(seg) is not list
            or len(seg) != 2
            or type(seg[0]) is not int
            or type(seg[1]) is not int
            or seg[0] < 0
            or seg[1] < 0
        ):
            raise MalformedTensor(f"{name}: bad segment")
        segs.append((seg[0], seg[1]))
    if encoding == "dense" and param is not None:
        raise MalformedTensor(f"{name}: unexpected parameter")
    if encoding in ("fp16", "int8") and dtype != "float32":
        raise MalformedTensor(f"{name}: {encoding} decodes to float32 only")
    if encoding == "fp16" and param is not None:
        raise MalformedTensor(f"{name}: unexpected parameter")
    if encoding == "int8" and (type(param) is not float or not 0 <= param <= INT8_MAX_SCALE):
        raise MalformedTensor(f"{name}: int8 scale must be a float in [0, {INT8_MAX_SCALE:g}]")
    if encoding == "sparse" and param not in INDEX_DTYPES:
        raise MalformedTensor(f"{name}: bad index dtype")
    return _Entry(name, encoding, dtype, tuple(shape), size, tuple(segs), param)


def _expected_lengths(e: _Entry) -> list[int] | None:
    """Byte lengths the segments must have (None: sparse, checked via nnz)."""
    if e.encoding == "dense":
        return [e.size * DTYPES[e.dtype].itemsize]
    if e.encoding == "fp16":
        return [e.size * 2]
    if e.encoding == "int8":
        return [e.size]
    return None


def _parse_header(
    view: memoryview, limits: WireLimits, max_elements: int
) -> tuple[list[_Entry], int]:
    size = view.nbytes
    if size < PREFIX_SIZE:
        raise MalformedTensor("tensor frame shorter than its prefix")
    magic, version, header_len, data_len = _PREFIX.unpack_from(view)
    if magic != TENSOR_MAGIC or version != TENSOR_VERSION:
        raise BadVersion("not a version-1 tensor frame")
    if header_len > limits.max_tensor_header:
        raise MalformedTensor("tensor header too large")
    data_start = _align(PREFIX_SIZE + header_len)
    if data_start + data_len != size:
        raise MalformedTensor(
            f"frame is {size} B but its prefix declares {data_start + data_len} B"
        )
    kwargs = limits.msgpack_unpack_kwargs()
    kwargs["max_array_len"] = min(kwargs["max_array_len"], max(limits.max_tensors, 8))
    try:
        header = msgpack.unpackb(view[PREFIX_SIZE : PREFIX_SIZE + header_len], **kwargs)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedTensor(f"tensor header is not valid msgpack: {exc}") from None
    if type(header) is not list or len(header) != 1 or type(header[0]) is not list:
        raise MalformedTensor("tensor header must be [entries]")
    raw_entries = header[0]
    if len(raw_entries) > limits.max_tensors:
        raise MalformedTensor("too many tensors")

    entries: list[_Entry] = []
    names: set[str] = set()
    spans: list[tuple[int, int]] = []
    total = 0
    for raw in raw_entries:
        e = _parse_entry(raw, limits)
        if e.name in names:
            raise MalformedTensor(f"{e.name}: duplicate tensor name")
        names.add(e.name)
        total += e.size
        if total > max_elements:
            raise MalformedTensor(f"frame declares more than {max_elements} elements")
        expected = _expected_lengths(e)
        if expected is None:  # sparse: nnz from the values, indices must agree
            (_, ilen), (_, vlen) = e.segments
            isize, vsize = DTYPES[e.param].itemsize, DTYPES[e.dtype].itemsize
            if vlen % vsize or ilen != (vlen // vsize) * isize or vlen // vsize > e.size:
                raise MalformedTensor(f"{e.name}: sparse segment lengths disagree")
        elif [length for _, length in e.segments] != expected:
            raise MalformedTensor(f"{e.name}: byte length does not match dtype x shape")
        for offset, length in e.segments:
            if offset + length > data_len:
                raise MalformedTensor(f"{e.name}: segment outside the frame")
            if length:
                spans.append((offset, offset + length))
        entries.append(e)
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start < end:
            raise MalformedTensor("tensor segments overlap")
    return entries, data_start


def _view(data: memoryview, seg: tuple[int, int], dtype: np.dtype[Any]) -> np.ndarray:
    offset, length = seg
    count = length // dtype.itemsize
    if count == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset)


def _materialize(e: _Entry, data: memoryview, allow_nonfinite: bool) -> np.ndarray | SparseArray:
    if e.encoding == "sparse":
        idx = _view(data, e.segments[0], DTYPES[e.param])
        values = _view(data, e.segments[1], DTYPES[e.dtype])
        if idx.size:
            if int(idx[0]) < 0 or int(idx[-1]) >= e.size:
                raise MalformedTensor(f"{e.name}: sparse index out of range")
            if idx.size > 1 and not bool(np.all(idx[1:] > idx[:-1])):
                raise MalformedTensor(f"{e.name}: sparse indices not strictly increasing")
        _check_values(e.name, values, allow_nonfinite)
        return SparseArray(idx, values, e.shape)
    if e.encoding == "dense":
        arr = _view(data, e.segments[0], DTYPES[e.dtype])
        _check_values(e.name, arr, allow_nonfinite)
    elif e.encoding == "fp16":
        half = _view(data, e.segments[0], DTYPES["float16"])
        _check_values(e.name, half, allow_nonfinite)
        arr = half.astype(np.float32)
    else:  # int8
        q = _view(data, e.segments[0], DTYPES["int8"])
        if q.size and int(np.min(q)) < -INT8_LEVELS:
            raise MalformedTensor(f"{e.name}: int8 value -128 is outside [-127, 127]")
        arr = q.astype(np.float32)
        arr *= np.float32(e.param)
    return arr.reshape(e.shape)


def _check_values(name: str, arr: np.ndarray, allow_nonfinite: bool) -> None:
    if not arr.size:
        return
    if arr.dtype.kind == "f" and not allow_nonfinite and not _all_finite(arr):
        raise NonFiniteTensor(f"{name}: contains NaN or Inf")
    if arr.dtype.kind == "b" and int(np.max(arr.view(np.uint8))) > 1:
        raise MalformedTensor(f"{name}: bool bytes must be 0 or 1")


def decode_tensor_frame(
    frame: bytes | bytearray | memoryview,
    *,
    max_elements: int | None = None,
    allow_nonfinite: bool = False,
    limits: WireLimits = DEFAULT_LIMITS,
) -> dict[str, np.ndarray | SparseArray]:
    """Decode a tensor frame, keeping sparse tensors as :class:`SparseArray`.

    ``max_elements`` (default ``limits.max_tensor_elements``) bounds the summed
    element count of all tensors, dense size for sparse ones. Raises only
    :class:`~.errors.WireError` subclasses.
    """
    limit = limits.max_tensor_elements if max_elements is None else max_elements
    view = memoryview(frame)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    entries, data_start = _parse_header(view, limits, limit)
    data = view[data_start:]
    return {e.name: _materialize(e, data, allow_nonfinite) for e in entries}


def decode_tensors(
    frame: bytes | bytearray | memoryview,
    *,
    max_elements: int | None = None,
    allow_nonfinite: bool = False,
    limits: WireLimits = DEFAULT_LIMITS,
) -> dict[str, np.ndarray]:
    """Decode a tensor frame into numpy arrays (sparse tensors densified).

    See :func:`decode_tensor_frame`; dense tensors are zero-copy views of ``frame``.
    """
    out = decode_tensor_frame(
        frame, max_elements=max_elements, allow_nonfinite=allow_nonfinite, limits=limits
    )
    return {k: v.to_dense() if isinstance(v, SparseArray) else v for k, v in out.items()}


def to_torch(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Wrap decoded arrays as torch tensors, copying only the read-only ones.

    ``torch.from_numpy`` shares memory; on a read-only view (a frame given as
    ``bytes``) a write through the tensor would corrupt an immutable object, so such
    arrays are copied. Decode from a ``bytearray`` that you hand over to get
    zero-copy tensors.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, arr in arrays.items():
        if not arr.flags.writeable or not arr.dtype.isnative:
            arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), copy=True)
        out[name] = torch.from_numpy(arr)
    return out
